"""The test configuration's warning filters: keras_meta's own warnings fail a test that
does not expect them, and third-party warnings are silenced only by exact message."""

import pathlib
import subprocess
import sys
import textwrap
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _filters():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["pytest"]["ini_options"]["filterwarnings"]


def test_third_party_filters_name_an_exact_message():
    for entry in _filters():
        action, message, *_ = entry.split(":") + [""]
        if action == "ignore":
            # An exact, anchored message: a new warning of the same category still shows.
            assert message.strip() and not message.startswith(".*"), entry


def test_an_unexpected_library_warning_fails_the_test(tmp_path):
    test_file = tmp_path / "test_probe.py"
    test_file.write_text(textwrap.dedent("""
        import warnings

        import pytest

        from keras_meta._warnings import KerasMetaWarning


        def test_unexpected():
            warnings.warn("something new", KerasMetaWarning)


        def test_expected():
            with pytest.warns(KerasMetaWarning, match="announced"):
                warnings.warn("announced", KerasMetaWarning)
    """))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(test_file)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "KerasMetaWarning: something new" in result.stdout
