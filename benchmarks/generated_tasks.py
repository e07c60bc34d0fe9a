"""Does meta-training on GAN-generated classes help when real classes are few? (glyphs)

For each number of real background classes N (the first N of `glyphs()`'s background
split), trains a `ConditionalGAN` on their drawings, then meta-trains two ProtoNets from
the same initial weights for the same number of meta-steps: one on real episodes only, one
on `MixedTasks` (each task generated with probability `--fraction`, its classes new latent
codes). Both are evaluated on the same held-out 5-way 1-shot episodes of the evaluation
fonts: accuracy with a 95% Student-t CI over tasks.

    .venv/bin/python benchmarks/generated_tasks.py --classes 50 200 --steps 300
"""

import argparse
import json
import time

import keras
import numpy as np

import keras_meta as km
from keras_meta.tasks.generated import ConditionalGAN, GeneratedClasses, MixedTasks

WAYS, SHOTS, QUERIES = 5, 1, 5


def embedding(seed):
    keras.utils.set_random_seed(seed)
    layers = []
    for _ in range(3):
        layers += [keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    return keras.Sequential([keras.Input((28, 28, 1)), *layers, keras.layers.Flatten()])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--gan-steps", type=int, default=1500)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--meta-batch-size", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = km.datasets.glyphs(verbose=0)
    test = km.tasks.FewShotClassification(data.images, data.labels, ways=WAYS, shots=SHOTS, queries=QUERIES,
                                          split=data.split("evaluation"))
    results = []
    for n in args.classes:
        classes = data.split("background")[:n]
        real = km.tasks.FewShotClassification(data.images, data.labels, ways=WAYS, shots=SHOTS, queries=QUERIES,
                                              split=classes)
        keep = np.isin(data.labels, classes)
        relabel = {c: i for i, c in enumerate(classes)}
        start = time.perf_counter()
        gan = ConditionalGAN(n, seed=args.seed)
        gan_history = gan.fit(data.images[keep], np.array([relabel[c] for c in data.labels[keep]]),
                              steps=args.gan_steps, seed=args.seed)
        gan_seconds = time.perf_counter() - start
        mixed = MixedTasks(real, GeneratedClasses(gan, WAYS, SHOTS, QUERIES), fraction=args.fraction)
        for name, tasks in (("real only", real), (f"real + generated ({args.fraction:.0%})", mixed)):
            learner = km.ProtoNet(embedding(args.seed))
            learner.compile(keras.optimizers.Adam(1e-3))
            start = time.perf_counter()
            learner.fit(tasks, meta_batch_size=args.meta_batch_size, steps_per_epoch=args.steps, verbose=0,
                        seed=args.seed)
            seconds = time.perf_counter() - start
            row = learner.evaluate(test, steps=[0], meta_batch_size=20, num_batches=args.eval_batches,
                                   seed=12345)[0]
            results.append({"real_classes": n, "training": name, "accuracy": row["accuracy"],
                            "accuracy_ci95": row["accuracy_ci95"], "fit_seconds": seconds,
                            "gan_seconds": gan_seconds, "gan_final_d_loss": float(np.mean(gan_history["d_loss"][-50:])),
                            "gan_final_g_loss": float(np.mean(gan_history["g_loss"][-50:]))})
            print(json.dumps(results[-1]), flush=True)
    print(f"\n| real background classes | meta-training tasks | held-out 5-way 1-shot accuracy (95% CI) |")
    print("| --- | --- | --- |")
    for r in results:
        print(f"| {r['real_classes']} | {r['training']} | {100 * r['accuracy']:.1f}% ± {100 * r['accuracy_ci95']:.1f} |")
    print(f"\nargs: {vars(args)}; {args.eval_batches * 20} held-out tasks")


if __name__ == "__main__":
    main()
