"""`run.json`, the manifest `keras-meta train` writes and `keras-meta evaluate` reads."""

import json
import pathlib

MANIFEST = "run.json"


def write_manifest(out, family, learner_file, config):
    """Writes `run.json`: the family, the learner file and `config`, the settings that ran."""
    (pathlib.Path(out) / MANIFEST).write_text(json.dumps(
        {"family": family, "learner_file": learner_file, "config": config}, indent=1))


def read_manifest(run_dir):
    manifest = run_dir / MANIFEST
    if manifest.exists():
        return json.loads(manifest.read_text())
    # Runs saved before run.json existed: infer the family from maml_<family>.keras.
    for family in ("sinusoid", "glyphs"):
        if (run_dir / f"maml_{family}.keras").exists():
            return {"family": family, "learner_file": f"maml_{family}.keras", "config": {}}
    raise FileNotFoundError(
        f"Expected {run_dir / MANIFEST} (written by `keras-meta train`) or a maml_<family>.keras file. "
        f"Received: run_dir={str(run_dir)!r} containing {sorted(p.name for p in run_dir.iterdir())}")
