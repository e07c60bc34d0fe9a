# Two entry points for a fresh machine: `make demo` (meta-train and plot) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.keras_meta_installed
EXTRAS ?= dev,tf-agents,mujoco

.PHONY: install build demo test sanitize clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "scikit-build-core>=0.10" "pybind11>=3.0" cmake ninja "setuptools>=70.1" wheel
	flock /tmp/keras_meta_build.lock $(PY) -m pip install -q --no-build-isolation -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Rebuilds only the C++ extension (for development after editing csrc/).
build: install
	flock /tmp/keras_meta_build.lock $(PY) -m pip install -q --no-build-isolation --no-deps -e .

demo: install
	$(VENV)/bin/keras-meta train sinusoid --output runs/sinusoid

test: install
	$(PY) -m pytest -q -n 2 --durations=15 tests

# The C++-facing tests and a bounded fuzz run against an ASan+UBSan build of _core.
sanitize: install
	fuzz/sanitize.sh

clean:
	rm -rf build $(VENV)
