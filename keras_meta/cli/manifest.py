"""`run.json`, the manifest `keras-meta train` writes and `keras-meta evaluate` reads."""

import json
import pathlib

MANIFEST = "run.json"


def write_manifest(out, family, learner_file, config):
    """Writes `run.json`: the family, the learner file and `config`, the settings that ran."""
    (pathlib.Path(out) / MANIFEST).write_text(json.dumps(
        {"family": family, "learner_file": learner_file, "config": config}, indent=1))


def read_manifest(run_dir):
    """The run's manifest; its `learner_file` must name a file inside `run_dir`.

    Raises:
        ValueError: For a manifest whose `learner_file` leaves the run folder (an absolute
            path, `..`, or a symbolic link out of it), before anything is loaded.
    """
    manifest = run_dir / MANIFEST
    if manifest.exists():
        content = json.loads(manifest.read_text())
        _check_inside(run_dir, content.get("learner_file"))
        return content
    # Runs saved before run.json existed: infer the family from maml_<family>.keras.
    for family in ("sinusoid", "glyphs"):
        if (run_dir / f"maml_{family}.keras").exists():
            return {"family": family, "learner_file": f"maml_{family}.keras", "config": {}}
    raise FileNotFoundError(
        f"Expected {run_dir / MANIFEST} (written by `keras-meta train`) or a maml_<family>.keras file. "
        f"Received: run_dir={str(run_dir)!r} containing {sorted(p.name for p in run_dir.iterdir())}")


def _check_inside(run_dir, learner_file):
    root = pathlib.Path(run_dir).resolve()
    if not isinstance(learner_file, str) or not learner_file:
        raise ValueError(f"Expected `learner_file` in {pathlib.Path(run_dir) / MANIFEST} to name a "
                         f"file in the run folder. Received: learner_file={learner_file!r}")
    target = (root / learner_file).resolve()
    if root not in target.parents:
        raise ValueError(
            f"Expected `learner_file` in {pathlib.Path(run_dir) / MANIFEST} to stay inside the run "
            f"folder {str(root)!r}. Received: learner_file={learner_file!r} (resolves to "
            f"{str(target)!r})")

