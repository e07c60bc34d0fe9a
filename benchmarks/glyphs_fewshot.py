"""Few-shot classification on the built-in Hershey glyphs (the Omniglot protocol).

Meta-trains a learner on the background fonts and reports query accuracy on 5-way or
20-way 1-shot episodes from the held-out evaluation fonts, with 95% confidence intervals
over tasks. The paper settings (MAML, Omniglot): conv4 with 64 filters, inner lr 0.4 and
1 step (5-way) or 0.1 and 5 steps (20-way), 3/5 steps at test, meta-batch 32/16, 60,000
iterations. On a 2-core CPU the defaults here are smaller; the printed header states
exactly what ran.

    python benchmarks/glyphs_fewshot.py --ways 5 --iterations 1500
"""

import argparse
import json
import time

import keras

import keras_meta as km

PAPER = {5: dict(inner_lr=0.4, train_steps=1, test_steps=3),
         20: dict(inner_lr=0.1, train_steps=5, test_steps=5)}
LEARNERS = {"maml": km.MAML, "fomaml": km.FOMAML, "reptile": km.Reptile, "meta_sgd": km.MetaSGD}
# Held-out tasks are drawn in meta-batches of this size with this seed, the same for
# every learner and script.
EVAL_BATCH, EVAL_SEED = 20, 12345


def episodes(ways, queries):
    """The glyph data and its 1-shot `(background, evaluation)` task distributions."""
    data = km.datasets.glyphs()
    kwargs = dict(ways=ways, shots=1, queries=queries)
    train = km.tasks.FewShotClassification(data.images, data.labels,
                                           split=data.split("background"), **kwargs)
    test = km.tasks.FewShotClassification(data.images, data.labels,
                                          split=data.split("evaluation"), **kwargs)
    return data, train, test


def held_out(learner, test, steps, tasks):
    """`learner.evaluate` on `tasks` (rounded down to whole meta-batches) held-out tasks.

    Returns:
        `(result, tasks)`: the per-step results and the number of tasks evaluated.
    """
    batches = max(1, tasks // EVAL_BATCH)
    result = learner.evaluate(test, steps=steps, meta_batch_size=EVAL_BATCH,
                              num_batches=batches, seed=EVAL_SEED)
    return result, batches * EVAL_BATCH


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learner", choices=sorted(LEARNERS), default="maml")
    parser.add_argument("--ways", type=int, default=5, choices=sorted(PAPER))
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--meta-batch-size", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="inner steps in training (default: the paper's)")
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    paper = PAPER[args.ways]
    train_steps = args.train_steps or paper["train_steps"]
    data, train, test = episodes(args.ways, args.queries)
    keras.utils.set_random_seed(args.seed)
    learner = LEARNERS[args.learner](km.models.conv4(args.ways, data.image_shape, args.filters),
                                     inner_lr=paper["inner_lr"], inner_steps=train_steps)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    learner.fit(train, meta_batch_size=args.meta_batch_size, epochs=10,
                steps_per_epoch=max(1, args.iterations // 10), seed=args.seed, verbose=2)
    seconds = time.perf_counter() - start
    steps = sorted({0, 1, paper["test_steps"]})
    result, evaluated = held_out(learner, test, steps, args.eval_tasks)
    print(f"\n{args.learner} glyphs {args.ways}-way 1-shot, {args.queries} queries: "
          f"{int(learner.task_step.numpy())} meta-iterations x {args.meta_batch_size} tasks, "
          f"conv4/{args.filters} filters, inner lr {paper['inner_lr']}, {train_steps} train "
          f"step(s), train {seconds:.0f} s; {evaluated} held-out tasks")
    for s in steps:
        r = result[s]
        print(f"  {s} steps: accuracy {r['accuracy']:.3f} ± {r['accuracy_ci95']:.3f} (95% CI)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "train_steps": train_steps, "seconds": seconds,
                       "result": {str(k): v for k, v in result.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
