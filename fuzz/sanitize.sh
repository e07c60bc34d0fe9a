#!/usr/bin/env bash
# Builds keras_meta._core with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan
# (the .venv install is left alone), then runs the C++-facing tests and a bounded fuzz run
# against it. Any sanitizer report fails the run (halt_on_error + non-zero exit code).
#
#   fuzz/sanitize.sh                 # from the repository root; FUZZ_ITERATIONS=N to change the fuzz budget
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"  # the venv's cmake and ninja when installed
BUILD=build/asan
OVERLAY=$BUILD/overlay

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKERAS_META_SANITIZE=ON \
  -DPython_EXECUTABLE="$(realpath "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" > "$BUILD.log"
cmake --build "$BUILD" --parallel 2 >> "$BUILD.log"  # both cores: the cold ASan build is most of this run
SO=$(ls "$BUILD"/_core*.so)

# sitecustomize.py on PYTHONPATH serves keras_meta._core from the sanitized build, ahead of the
# editable install's finder; the rest of keras_meta comes from the checkout as usual.
mkdir -p "$OVERLAY"
cat > "$OVERLAY/sitecustomize.py" <<PYEOF
import importlib.machinery, importlib.util, sys

class _SanitizedCore:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "keras_meta._core":
            loader = importlib.machinery.ExtensionFileLoader(name, "$(realpath "$SO")")
            return importlib.util.spec_from_file_location(name, loader.path, loader=loader)
        return None

sys.meta_path.insert(0, _SanitizedCore)
PYEOF

export LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$(realpath "$OVERLAY")${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_META_CORE="$(realpath "$SO")"

"$PY" -c "import keras_meta._core as c, sys; assert c.__file__ == '$(realpath "$SO")', c.__file__; print('sanitized core:', c.__file__)"
"$PY" fuzz/fuzz_core.py --iterations "${FUZZ_ITERATIONS:-20000}" --seed 0
"$PY" -m pytest -q -p no:cacheprovider -p no:randomly tests/test_core_sampler.py tests/tasks/test_sampler.py \
  tests/rl/test_rollout_buffer.py tests/reliability/test_core_concurrency.py \
  "tests/reliability/test_bad_input_catalogue.py::test_native_bad_input" \
  "tests/reliability/test_bad_input_catalogue.py::test_read_only_inputs_are_accepted_where_only_read" \
  "tests/reliability/test_bad_input_catalogue.py::test_adding_to_a_full_row_changes_nothing" \
  "tests/reliability/test_bad_input_catalogue.py::test_nan_rollout_data_stays_in_its_row" \
  "tests/reliability/test_bad_input_catalogue.py::test_infinite_actions_are_clipped"
echo "sanitize.sh: no sanitizer reports"
