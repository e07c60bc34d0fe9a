"""The `keras-meta` command: short meta-training runs with a visible result.

    keras-meta train sinusoid [--iterations N] [--shots K] [--output DIR]
    keras-meta train glyphs [--iterations N] [--ways N] [--output DIR]
    keras-meta train navigation [--iterations N] [--output DIR]
    keras-meta evaluate RUN_DIR [--seeds N] [--output DIR] [--no-compute]

`train` writes `run.json` (the task family and its configuration) next to the saved
learner, so `evaluate` can rebuild the matching meta-train and meta-test task families.
"""

import argparse
import json
import pathlib
import sys
import time


def train_sinusoid(args):
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import keras_meta as km
    from keras_meta import baselines, models

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    tasks = km.tasks.Sinusoid(shots=args.shots, queries=args.shots)
    maml = km.MAML(models.sinusoid_mlp(), inner_lr=0.01, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=50)
    epochs = 10
    print(f"Meta-training MAML on sinusoids ({args.shots}-shot), {args.iterations} meta-steps")
    start = time.perf_counter()
    maml.fit(tasks, meta_batch_size=25, epochs=epochs,
             steps_per_epoch=max(1, args.iterations // epochs), seed=args.seed,
             validation_tasks=km.tasks.Sinusoid(shots=args.shots, queries=100, split="val"))
    seconds = time.perf_counter() - start
    maml.save(out / "maml_sinusoid.keras")
    _write_manifest(out, "sinusoid", "maml_sinusoid.keras", args)
    baseline = km.MAML(baselines.pretrained(models.sinusoid_mlp(), tasks, args.iterations,
                                            seed=args.seed), inner_lr=0.01)
    baseline.compile()

    steps = list(range(11))
    test = km.tasks.Sinusoid(shots=args.shots, queries=100, split="test")
    curves = {name: learner.evaluate(test, steps=steps, num_batches=8, inner_lr=args.eval_lr)
              for name, learner in (("MAML", maml), ("pretrained", baseline))}

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    batch, params = test.sample_with_params(3, 123)
    grid = np.linspace(-5, 5, 200, dtype="float32")[:, None]

    def on_grid(model):
        # A direct call: `predict` would trace a function for every adapted model.
        return keras.ops.convert_to_numpy(model(grid))

    for ax, sx, sy, (amp, phase) in zip(axes[:3], batch.support_x, batch.support_y, params):
        ax.plot(grid, amp * np.sin(grid - phase), "k-", label="true")
        ax.plot(sx, sy, "k^", label=f"{args.shots} support points")
        ax.plot(grid, on_grid(maml.model), ":", label="meta-model (0 steps)")
        for k in (1, 10):
            adapted = maml.adapt(sx, sy, steps=k, inner_lr=args.eval_lr)
            ax.plot(grid, on_grid(adapted), label=f"MAML, {k} step(s)")
        adapted = baseline.adapt(sx, sy, steps=10, inner_lr=args.eval_lr)
        ax.plot(grid, on_grid(adapted), "--", label="pretrained, 10 steps")
        ax.set_title(f"held-out task: A={amp:.2f}, phase={phase:.2f}")
    axes[0].legend(fontsize=7)
    for name, result in curves.items():
        axes[3].plot(steps, [result[s]["loss"] for s in steps], "o-", label=name)
    axes[3].set_xlabel("inner gradient steps")
    axes[3].set_ylabel("query MSE (held-out tasks)")
    axes[3].set_title("adaptation curve")
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(out / "sinusoid.png", dpi=110)
    summary = {name: {s: round(result[s]["loss"], 4) for s in (0, 1, 5, 10)}
               for name, result in curves.items()}
    (out / "results.json").write_text(json.dumps(
        {"meta_steps": int(maml.task_step.numpy()), "train_seconds": seconds,
         "eval_lr": args.eval_lr, "query_mse": summary}, indent=1))
    print(f"\nHeld-out query MSE after k steps (eval lr {args.eval_lr}):")
    for name, row in summary.items():
        print(f"  {name:<11}" + "  ".join(f"k={s}: {v:.3f}" for s, v in row.items()))
    print(f"Saved {out / 'maml_sinusoid.keras'} and {out / 'sinusoid.png'}")


def train_glyphs(args):
    import keras

    import keras_meta as km
    from keras_meta import models

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    data = km.datasets.glyphs()
    kwargs = dict(ways=args.ways, shots=1, queries=5)
    train = km.tasks.FewShotClassification(data.images, data.labels,
                                           split=data.split("background"), **kwargs)
    test = km.tasks.FewShotClassification(data.images, data.labels,
                                          split=data.split("evaluation"), **kwargs)
    maml = km.MAML(models.conv4(args.ways, data.image_shape, filters=32), inner_lr=0.4, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3))
    print(f"Meta-training MAML on glyphs, {args.ways}-way 1-shot, {args.iterations} meta-steps")
    maml.fit(train, meta_batch_size=args.meta_batch_size, epochs=5,
             steps_per_epoch=max(1, args.iterations // 5), seed=args.seed)
    maml.save(out / "maml_glyphs.keras")
    _write_manifest(out, "glyphs", "maml_glyphs.keras", args)
    result = maml.evaluate(test, steps=[0, 1, 3], meta_batch_size=16, num_batches=10, seed=1)
    (out / "results.json").write_text(json.dumps({str(k): v for k, v in result.items()}, indent=1))
    print("\nHeld-out (evaluation-font) query accuracy after k steps:")
    for s, row in result.items():
        print(f"  k={s}: accuracy {row['accuracy']:.3f}, loss {row['loss']:.3f}")


MANIFEST = "run.json"


def _write_manifest(out, family, learner_file, args):
    config = {k: getattr(args, k) for k in ("iterations", "shots", "ways", "meta_batch_size", "eval_lr", "seed")}
    (pathlib.Path(out) / MANIFEST).write_text(json.dumps(
        {"family": family, "learner_file": learner_file, "config": config}, indent=1))


def _read_manifest(run_dir):
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


def _families(family, config):
    """(test tasks, train tasks, task_factory, shots, budgets, evaluate kwargs) of a run."""
    import keras_meta as km

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
                [0, 1, 3], dict(meta_batch_size=16, num_batches=4))
    raise ValueError(f"Expected the run's family to be 'sinusoid' or 'glyphs'. Received: family={family!r}")


def evaluate_run(args):
    import keras

    import keras_meta as km

    run_dir = pathlib.Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Expected RUN_DIR to be a folder. Received: run_dir={str(run_dir)!r}")
    manifest = _read_manifest(run_dir)
    learner = keras.saving.load_model(run_dir / manifest["learner_file"])
    test, train, factory, shots, budgets, kwargs = _families(manifest["family"], manifest.get("config", {}))
    out = pathlib.Path(args.output) if args.output else run_dir / "evaluation"
    print(f"Evaluating {run_dir / manifest['learner_file']} on {manifest['family']} "
          f"({args.seeds} seeds) -> {out}")
    report = km.evaluation.evaluate(learner, test, train_tasks=train, budgets=budgets, shots=shots,
                                    task_factory=factory, seeds=list(range(args.seeds)),
                                    compute=not args.no_compute, report_dir=out, **kwargs)
    print(report.to_markdown())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-meta", description="keras_meta demos")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="meta-train on a built-in task family")
    train.add_argument("family", choices=["sinusoid", "glyphs", "navigation"])
    train.add_argument("--iterations", type=int, default=None)
    train.add_argument("--shots", type=int, default=10)
    train.add_argument("--ways", type=int, default=5)
    train.add_argument("--meta-batch-size", type=int, default=8)
    train.add_argument("--eval-lr", type=float, default=0.01)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", default=None)
    evaluate = commands.add_parser("evaluate", help="evaluate a saved run (learning speed, sample efficiency, "
                                                    "generalization, compute) into RUN_DIR/evaluation")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--seeds", type=int, default=3)
    evaluate.add_argument("--output", default=None)
    evaluate.add_argument("--no-compute", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        if args.seeds < 1:
            parser.error(f"Expected --seeds to be positive. Received: {args.seeds}")
        evaluate_run(args)
        return 0
    # Checked before any import or output directory, so a typo costs nothing.
    for flag in ("iterations", "shots", "ways", "meta_batch_size", "eval_lr"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            name = "--" + flag.replace("_", "-")
            parser.error(f"Expected {name} to be positive. Received: {name}={value}")
    if args.family == "sinusoid":
        args.iterations = args.iterations or 10000
        args.output = args.output or "runs/sinusoid"
        train_sinusoid(args)
    elif args.family == "glyphs":
        args.iterations = args.iterations or 500
        args.output = args.output or "runs/glyphs"
        train_glyphs(args)
    else:
        from keras_meta.rl.navigation_demo import train_navigation

        train_navigation(args.iterations or 100, args.output or "runs/navigation", seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
