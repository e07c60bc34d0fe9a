"""`keras-meta evaluate RUN_DIR`: the evaluation harness on a saved `keras-meta train` run."""

import pathlib

import keras

import keras_meta as km

# `keras_meta` imports its learners lazily; `load_model` finds a saved learner's class only
# once its module has registered it with Keras.
import keras_meta.algorithms  # noqa: F401
from keras_meta.cli.manifest import read_manifest


def _families(family, config):
    """(test tasks, train tasks, task_factory, shots, budgets, evaluate kwargs) of a run."""
    if family == "sinusoid":
        shots = int(config.get("shots", 10))
        make = lambda k, split: km.tasks.Sinusoid(shots=k, queries=100, split=split)
        return (make(shots, "test"), make(shots, "train"), lambda k: make(k, "test"),
                sorted({1, max(1, shots // 2), shots}), [0, 1, 5, 10],
                dict(inner_lr=config.get("eval_lr", 0.01), meta_batch_size=25, num_batches=4))
    if family == "glyphs":
        data = km.datasets.glyphs()
        ways = int(config.get("ways", 5))
        make = lambda k, split: km.tasks.FewShotClassification(
            data.images, data.labels, ways=ways, shots=k, queries=5, split=data.split(split))
        return (make(1, "evaluation"), make(1, "background"), lambda k: make(k, "evaluation"), [1, 3, 5],
                [0, 1, 3], dict(inner_lr=config.get("eval_lr"), meta_batch_size=16, num_batches=4))
    raise ValueError(f"Expected the run's family to be 'sinusoid' or 'glyphs'. Received: family={family!r}")


def evaluate_run(args):
    """Runs `keras-meta evaluate` on parsed, checked arguments."""
    run_dir = pathlib.Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Expected RUN_DIR to be a folder. Received: run_dir={str(run_dir)!r}")
    manifest = read_manifest(run_dir)
    learner = keras.saving.load_model(run_dir / manifest["learner_file"])
    test, train, factory, shots, budgets, kwargs = _families(manifest["family"], manifest.get("config", {}))
    out = pathlib.Path(args.output) if args.output else run_dir / "evaluation"
    print(f"Evaluating {run_dir / manifest['learner_file']} on {manifest['family']} "
          f"({args.seeds} seeds) -> {out}")
    report = km.evaluation.evaluate(learner, test, train_tasks=train, budgets=budgets, shots=shots,
                                    task_factory=factory, seeds=list(range(args.seeds)),
                                    compute=not args.no_compute, report_dir=out, **kwargs)
    print(report.to_markdown())
