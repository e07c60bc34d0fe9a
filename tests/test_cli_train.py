"""End-to-end `keras-meta train` runs at small sizes: exit status, run.json, the figure."""

import json

import pytest
from PIL import Image

from keras_meta import cli


def _run(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", *argv, "--output", str(out)]) == 0
    return out, json.loads((out / "run.json").read_text())


def _assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


def test_train_sinusoid_end_to_end(tmp_path, monkeypatch):
    out, manifest = _run(tmp_path, monkeypatch, ["sinusoid", "--iterations", "4", "--shots", "5"])
    assert manifest["family"] == "sinusoid" and (out / manifest["learner_file"]).exists()
    assert manifest["config"] == {"iterations": 4, "shots": 5, "meta_batch_size": 25,
                                  "eval_lr": 0.01, "seed": 0}
    _assert_png(out / "sinusoid.png")


def test_train_glyphs_end_to_end(tmp_path, monkeypatch):
    from keras_meta.cli import train

    out, manifest = _run(tmp_path, monkeypatch, ["glyphs", "--iterations", "4", "--ways", "3",
                                                 "--seed", "2"])
    assert manifest["family"] == "glyphs" and (out / manifest["learner_file"]).exists()
    assert manifest["config"] == {"iterations": 4, "ways": 3, "shots": 1, "meta_batch_size": 8,
                                  "inner_lr": train.GLYPHS_INNER_LR,
                                  "inner_steps": train.GLYPHS_INNER_STEPS,
                                  "eval_lr": train.GLYPHS_INNER_LR, "seed": 2}
    results = json.loads((out / "results.json").read_text())
    assert results["meta_steps"] == 4
    assert set(results["query_accuracy"]) == {"MAML", "pretrained"}
    _assert_png(out / "glyphs.png")


def test_train_navigation_end_to_end(tmp_path, monkeypatch):
    out, manifest = _run(tmp_path, monkeypatch, ["navigation", "--iterations", "2",
                                                 "--meta-batch-size", "2"])
    assert manifest["family"] == "navigation" and (out / manifest["learner_file"]).exists()
    assert manifest["config"] == {"iterations": 2, "meta_batch_size": 2, "episodes": 20,
                                  "seed": 0}
    _assert_png(out / "navigation.png")
