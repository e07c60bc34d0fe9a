"""Share of a conv meta-step spent waiting for episodes (issue: < 5%).

Trains MAML on the glyph-shaped conv net (5-way 1-shot, 15 queries) three ways in one
run and compares the time per meta-step:
  in-graph  - `fit(FewShotClassification)`: the C++ sampler called inside the step;
  prefetch  - `fit(tasks.as_dataset(...))`: production overlapped by tf.data prefetching;
  no data   - `fit` on one cached batch repeated: the step with no sampling at all.
wait share = (t_source - t_no_data) / t_source. On a busy machine that difference is
buried in noise, so the script also times the sampler alone: the in-graph path calls it
serially inside each step, so its median time over the step time bounds the waiting share.

    python benchmarks/data_wait.py --steps 20
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import keras_meta as km


def timed_fit(learner, tasks, steps, **kwargs):
    learner.fit(tasks, epochs=1, steps_per_epoch=2, verbose=0, **kwargs)  # trace
    start = time.perf_counter()
    learner.fit(tasks, epochs=1, steps_per_epoch=steps, verbose=0, **kwargs)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--meta-batch-size", type=int, default=8)
    parser.add_argument("--filters", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1600 * 20, 28, 28, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(1600), 20)
    tasks = km.tasks.FewShotClassification(images, labels, ways=5, shots=1, queries=15)
    mb = args.meta_batch_size
    cached = tf.data.Dataset.from_tensors(tasks.sample(mb, 0)).cache().repeat()
    sources = {
        "in-graph": (tasks, dict(meta_batch_size=mb)),
        "prefetch": (tasks.as_dataset(mb, seed=0), {}),
        "no data": (cached, {}),
    }
    times = {}
    for name, (source, kwargs) in sources.items():
        keras.utils.set_random_seed(0)
        learner = km.MAML(km.models.conv4(5, (28, 28, 1), args.filters), inner_lr=0.4)
        learner.compile(loss=tasks.loss)
        times[name] = timed_fit(learner, source, args.steps, **kwargs)
    sample_times = []
    for i in range(50):
        start = time.perf_counter()
        tasks.sample(mb, i)
        sample_times.append(time.perf_counter() - start)
    sampler = float(np.median(sample_times))
    print(f"conv4/{args.filters}, 5-way 1-shot 15-query, meta-batch {mb}, {args.steps} timed steps")
    print(f"  sampler alone {sampler * 1000:.2f} ms per meta-batch = "
          f"{100 * sampler / times['in-graph']:.2f}% of an in-graph meta-step")
    for name, t in times.items():
        share = (t - times["no data"]) / t
        print(f"  {name:<9} {t * 1000:8.1f} ms/meta-step   waiting share {100 * share:+.1f}%")


if __name__ == "__main__":
    main()
