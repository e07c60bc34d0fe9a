"""`keras-meta train FAMILY`: meta-train on a built-in task family and save the run."""

import json
import pathlib
import time

import keras
import numpy as np

import keras_meta as km
from keras_meta import baselines, models
from keras_meta.cli.manifest import write_manifest

# Glyphs MAML: one inner step of 0.1 in training. At the paper's 0.4 the meta-weights are
# tuned for exactly one step and further steps of 0.4 diverge (100 meta-steps: 48.7% after
# 1 step, 32.8% after 3); at 0.1, evaluated at the same step size, accuracy keeps rising
# with steps (70.4% after 1, 83.5% after 3, 89.5% after 5).
GLYPHS_INNER_LR = 0.1
GLYPHS_INNER_STEPS = 1
GLYPHS_EVAL_STEPS = (0, 1, 2, 3, 5)
NAVIGATION_EPISODES = 20  # per task and phase, as in the paper


def schedule(iterations, epochs, steps_per_execution):
    """`(epochs, steps_per_epoch, steps_per_execution)` taking exactly `iterations` meta-steps.

    At most `epochs` epochs and `steps_per_execution` steps a call, each dividing the
    next: `fit` takes whole executions only.
    """
    epochs = max(e for e in range(1, min(epochs, iterations) + 1) if iterations % e == 0)
    per_epoch = iterations // epochs
    execution = max(k for k in range(1, min(steps_per_execution, per_epoch) + 1)
                    if per_epoch % k == 0)
    return epochs, per_epoch, execution


def train(args):
    """Runs `keras-meta train` on parsed, checked arguments, filling the family's defaults."""
    if args.family == "sinusoid":
        args.iterations = args.iterations or 10000
        args.output = args.output or "runs/sinusoid"
        args.shots = args.shots or 10
        args.meta_batch_size = args.meta_batch_size or 25
        args.eval_lr = args.eval_lr or 0.01
        train_sinusoid(args)
    elif args.family == "glyphs":
        args.iterations = args.iterations or 500
        args.output = args.output or "runs/glyphs"
        args.ways = args.ways or 5
        args.meta_batch_size = args.meta_batch_size or 8
        args.eval_lr = args.eval_lr or GLYPHS_INNER_LR
        train_glyphs(args)
    else:
        # The RL stack (gymnasium) is imported for this family only.
        from keras_meta.rl.navigation_demo import train_navigation

        args.iterations = args.iterations or 100
        args.output = args.output or "runs/navigation"
        args.meta_batch_size = args.meta_batch_size or 20
        train_navigation(args.iterations, args.output, seed=args.seed,
                         meta_batch_size=args.meta_batch_size, episodes=NAVIGATION_EPISODES)
        write_manifest(args.output, "navigation", "policy.keras", {
            "iterations": args.iterations, "meta_batch_size": args.meta_batch_size,
            "episodes": NAVIGATION_EPISODES, "seed": args.seed})


def train_sinusoid(args):
    # Only the sinusoid run draws; "Agg" must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    tasks = km.tasks.Sinusoid(shots=args.shots, queries=args.shots)
    maml = km.MAML(models.sinusoid_mlp(), inner_lr=0.01, inner_steps=1)
    epochs, steps_per_epoch, execution = schedule(args.iterations, 10, 50)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=execution)
    print(f"Meta-training MAML on sinusoids ({args.shots}-shot), {args.iterations} meta-steps")
    start = time.perf_counter()
    maml.fit(tasks, meta_batch_size=args.meta_batch_size, epochs=epochs,
             steps_per_epoch=steps_per_epoch, seed=args.seed,
             validation_tasks=km.tasks.Sinusoid(shots=args.shots, queries=100, split="val"))
    seconds = time.perf_counter() - start
    maml.save(out / "maml_sinusoid.keras")
    write_manifest(out, "sinusoid", "maml_sinusoid.keras", {
        "iterations": int(maml.task_step.numpy()), "shots": args.shots,
        "meta_batch_size": args.meta_batch_size, "eval_lr": args.eval_lr, "seed": args.seed})
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    data = km.datasets.glyphs()
    kwargs = dict(ways=args.ways, shots=1, queries=5)
    train = km.tasks.FewShotClassification(data.images, data.labels,
                                           split=data.split("background"), **kwargs)
    test = km.tasks.FewShotClassification(data.images, data.labels,
                                          split=data.split("evaluation"), **kwargs)
    maml = km.MAML(models.conv4(args.ways, data.image_shape, filters=32),
                   inner_lr=GLYPHS_INNER_LR, inner_steps=GLYPHS_INNER_STEPS)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3))
    print(f"Meta-training MAML on glyphs, {args.ways}-way 1-shot, {args.iterations} meta-steps "
          f"({GLYPHS_INNER_STEPS} inner step(s) of {GLYPHS_INNER_LR})")
    epochs, steps_per_epoch, _ = schedule(args.iterations, 5, 1)
    maml.fit(train, meta_batch_size=args.meta_batch_size, epochs=epochs,
             steps_per_epoch=steps_per_epoch, seed=args.seed)
    maml.save(out / "maml_glyphs.keras")
    write_manifest(out, "glyphs", "maml_glyphs.keras", {
        "iterations": int(maml.task_step.numpy()), "ways": args.ways, "shots": 1,
        "meta_batch_size": args.meta_batch_size, "inner_lr": GLYPHS_INNER_LR,
        "inner_steps": GLYPHS_INNER_STEPS, "eval_lr": args.eval_lr, "seed": args.seed})
    baseline = km.MAML(baselines.pretrained(models.conv4(args.ways, data.image_shape, filters=32),
                                            train, args.iterations,
                                            meta_batch_size=args.meta_batch_size, seed=args.seed),
                       inner_lr=GLYPHS_INNER_LR)
    baseline.compile()

    steps = list(GLYPHS_EVAL_STEPS)
    curves = {name: learner.evaluate(test, steps=steps, meta_batch_size=16, num_batches=10, seed=1,
                                     inner_lr=args.eval_lr)
              for name, learner in (("MAML", maml), ("pretrained", baseline))}

    batch = test.sample(1, 123)
    support_x, support_y = batch.support_x[0], batch.support_y[0]
    # Two queries of each class, so every class shows up in the row.
    shown = np.concatenate([np.flatnonzero(batch.query_y[0] == c)[:2] for c in range(args.ways)])
    query_x, query_y = batch.query_x[0][shown], batch.query_y[0][shown]

    def predicted(model):
        return np.argmax(keras.ops.convert_to_numpy(model(query_x)), axis=-1)

    before = predicted(maml.model)
    after = predicted(maml.adapt(support_x, support_y, steps=steps[-1], inner_lr=args.eval_lr))

    columns = len(shown)
    fig = plt.figure(figsize=(2 * columns + 2, 6))
    grid = fig.add_gridspec(2, columns + 5)
    for i in range(columns):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(query_x[i, ..., 0], cmap="gray")
        ax.set_title(f"true {query_y[i]}\nbefore {before[i]}, after {after[i]}", fontsize=9,
                     color="green" if after[i] == query_y[i] else "red")
        ax.axis("off")
        if i < args.ways:
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(support_x[i, ..., 0], cmap="gray")
            ax.set_title(f"support: label {support_y[i]}", fontsize=9)
            ax.axis("off")
    fig.text(0.01, 0.97, f"held-out {args.ways}-way 1-shot task: query predictions of the "
             f"meta-weights (before) and after {steps[-1]} steps (after; green if right)",
             fontsize=10, va="top")
    ax = fig.add_subplot(grid[:, columns + 1:])
    for name, result in curves.items():
        ax.plot(steps, [result[s]["accuracy"] for s in steps], "o-", label=name)
    ax.axhline(1 / args.ways, color="gray", linestyle=":", label="chance")
    ax.set_xlabel(f"inner gradient steps (step size {args.eval_lr})")
    ax.set_ylabel("query accuracy (held-out fonts)")
    ax.set_title("adaptation curve")
    ax.legend()
    fig.savefig(out / "glyphs.png", dpi=90, bbox_inches="tight")
    summary = {name: {s: round(result[s]["accuracy"], 4) for s in steps}
               for name, result in curves.items()}
    (out / "results.json").write_text(json.dumps(
        {"meta_steps": int(maml.task_step.numpy()), "eval_lr": args.eval_lr,
         "query_accuracy": summary,
         "maml": {str(k): v for k, v in curves["MAML"].items()}}, indent=1))
    print(f"\nHeld-out (evaluation-font) query accuracy after k steps (eval lr {args.eval_lr}):")
    for name, row in summary.items():
        print(f"  {name:<11}" + "  ".join(f"k={s}: {v:.3f}" for s, v in row.items()))
    print(f"Saved {out / 'maml_glyphs.keras'} and {out / 'glyphs.png'}")
