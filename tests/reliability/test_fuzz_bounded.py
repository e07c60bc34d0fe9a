"""A bounded run of the `_core` fuzz harness (fuzz/fuzz_core.py) in a subprocess.

A crash (segfault, abort, sanitizer report) or an undocumented exception gives a non-zero
exit code. Longer runs: see fuzz/README.md.
"""

import os
import subprocess
import sys

import pytest

HARNESS = os.path.join(os.path.dirname(__file__), "..", "..", "fuzz", "fuzz_core.py")


@pytest.mark.parametrize("seed", [0, 1])
def test_random_inputs(seed):
    result = subprocess.run([sys.executable, HARNESS, "--iterations", "3000", "--seed", str(seed)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "no findings" in result.stdout


def test_atheris_run(tmp_path):
    pytest.importorskip("atheris")
    # libFuzzer's RSS limit reads the process's peak RSS, which Linux carries across exec from
    # the parent: this pytest worker's TensorFlow models (measured 2.2 GB), not the harness's
    # ~64 MB. The limit is raised past what the parent can hold.
    result = subprocess.run([sys.executable, os.path.abspath(HARNESS), "-atheris_runs=3000",
                             "-rss_limit_mb=16384"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done 3000" in result.stderr
