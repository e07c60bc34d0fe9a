"""Start-up cost: `import keras_meta` and `keras-meta --help` stay light.

The import checks run in a fresh interpreter, since this pytest process has imported
TensorFlow long before any test runs.
"""

import argparse
import json
import pathlib
import subprocess
import sys

import pytest

import keras_meta as km
from keras_meta.cli import build_parser

HEAVY = ("gymnasium", "keras", "keras_meta.rl", "metaworld", "mujoco", "tensorflow",
         "tensorflow_probability", "tf_agents", "tf_keras")

# Prints, as JSON, the heavy modules loaded after running the code in argv[1].
_PROBE = """
import json, sys
heavy = {heavy!r}
exec(sys.argv[1])
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def _heavy_modules_after(code):
    result = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), code],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_keras_meta_imports_nothing_heavy():
    assert _heavy_modules_after("import keras_meta") == []


def test_import_keras_meta_rl_imports_nothing_heavy():
    assert _heavy_modules_after("import keras_meta.rl") == ["keras_meta.rl"]


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]],
                         ids=["help", "train-help", "evaluate-help"])
def test_cli_help_imports_neither_tensorflow_nor_keras(argv):
    code = ("from keras_meta.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit as exit:\n"
            "    assert exit.code == 0, exit.code\n")
    assert _heavy_modules_after(code) == []


@pytest.mark.parametrize("command", [[sys.executable, "-m", "keras_meta.cli"], ["keras-meta"]],
                         ids=["python-m", "entry-point"])
@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]],
                         ids=["help", "train-help", "evaluate-help"])
def test_cli_help_exits_zero(command, argv):
    if command == ["keras-meta"]:
        # The console script installed next to this interpreter, whatever PATH says.
        script = pathlib.Path(sys.executable).with_name("keras-meta")
        if not script.exists():
            pytest.skip(f"Expected the keras-meta entry point at {script}")
        command = [str(script)]
    result = subprocess.run(command + argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: keras-meta")


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from _parsers(subparser)


def test_every_cli_argument_has_a_help_text():
    parsers = list(_parsers(build_parser()))
    assert [p.prog for p in parsers] == ["keras-meta", "keras-meta train", "keras-meta evaluate"]
    for parser in parsers:
        for action in parser._actions:
            assert action.help and action.help.strip(), (parser.prog, action.dest)
            for choice in getattr(action, "_choices_actions", ()):
                assert choice.help and choice.help.strip(), (parser.prog, choice.dest)


def test_public_names_resolve_lazily():
    assert km.__version__ == "0.1.0"
    for name in km.__all__:
        assert getattr(km, name) is not None, name
    assert set(km.__all__) <= set(dir(km))
    assert {"rl", "datasets", "evaluation", "MAML", "tasks"} <= set(dir(km))
    assert km.MAML is km.algorithms.MAML
    assert km.TaskBatch is km.tasks.TaskBatch
    assert km.tasks.Sinusoid and km.datasets.glyphs and km.evaluation.evaluate
    assert km.rl.MAMLRL is km.rl.maml_rl.MAMLRL
    with pytest.raises(AttributeError, match="has no attribute 'Bogus'"):
        km.Bogus  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'Bogus'"):
        km.rl.Bogus  # noqa: B018


def test_every_rl_name_imports():
    namespace = {}
    for name in km.rl.__all__:
        exec(f"from keras_meta.rl import {name}", namespace)
        assert namespace[name] is getattr(km.rl, name), name
    assert set(km.rl.__all__) <= set(dir(km.rl))


def test_cli_entry_point_is_declared():
    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert 'keras-meta = "keras_meta.cli:main"' in pyproject.read_text()
