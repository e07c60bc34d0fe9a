"""Peak memory and time per meta-step of second-order MAML against inner steps, by mode.

conv4 (64 filters, BatchNorm, max-pool), 5-way 1-shot, 15 queries, meta-batch 32,
random 28x28 images, the default execution (the task loop for a conv net on CPU; with
`--vectorize`, all tasks at once through `tf.vectorized_map`, as a GPU would run them),
for `second_order_mode` "plain", "recompute", "truncated:k" and first order (FOMAML) as
the floor. Each configuration runs in its own subprocess: peak RSS is
`resource.getrusage(RUSAGE_SELF).ru_maxrss` after `fit` minus the RSS the process holds
just before `fit` (model, data and TensorFlow loaded); the time is the median of the timed
meta-steps after one untimed traced step. A second column separates what the meta-steps
themselves hold from tracing: the peak RSS of the timed steps (VmHWM reset through
/proc/self/clear_refs after the traced step) above the RSS right after tracing. Workers
run with MALLOC_MMAP_THRESHOLD_=64 KiB so that freed tensors leave the RSS. The estimate
column is keras_meta's own (`MAML.memory_plan.estimate`, `keras_meta.inner.memory`): the
smallest `compile(memory_budget=...)` in which the plan counts that mode as fitting.

    python benchmarks/memory.py --steps 1 5 10 20 --modes plain recompute truncated:2 first_order
    python benchmarks/memory.py --worker --inner-steps 10 --mode recompute   # one configuration
    python benchmarks/memory.py --vectorize --filters 32 --queries 1 --steps 2 10 --modes plain recompute

Issue 20's baseline (default path, this 2-core CPU, idle): 1 step +324 MiB at 1.8 s per
meta-step, 2 steps +377 MiB / 2.2 s, 5 steps +530 MiB / 3.3 s, 10 steps +748 MiB / 5.1 s.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def current_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_since_reset():
    """VmHWM: the peak RSS since the last `reset_peak_rss()` (or the start)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0), so tracing's peak is left out."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(args):
    import resource

    import keras
    import numpy as np

    import keras_meta as km
    from keras_meta.inner import memory

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400 * 20, 28, 28, 1), dtype=np.uint8)
    tasks = km.tasks.FewShotClassification(images, np.repeat(np.arange(400), 20), ways=5,
                                           shots=1, queries=args.queries)
    keras.utils.set_random_seed(0)
    first_order = args.mode == "first_order"
    learner = km.MAML(km.models.conv4(5, (28, 28, 1), args.filters), inner_lr=0.4,
                      inner_steps=args.inner_steps, first_order=first_order)
    # First order is no `second_order_mode`: "plain" only makes `fit` fill `memory_plan`
    # (the same graph as none); its estimate is taken below with no step exact.
    learner.compile(loss=tasks.loss, second_order_mode="plain" if first_order else args.mode,
                    vectorize=True if args.vectorize else "auto")
    before = current_rss()
    start = time.perf_counter()
    learner.fit(tasks, meta_batch_size=args.meta_batch_size, steps_per_epoch=1, verbose=0)
    traced = current_rss()
    reset_peak_rss()
    trace_seconds = time.perf_counter() - start
    times = []
    for _ in range(args.timed):
        start = time.perf_counter()
        learner.fit(tasks, meta_batch_size=args.meta_batch_size, steps_per_epoch=1,
                    verbose=0)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steps_peak = peak_rss_since_reset()
    plan = learner.memory_plan
    estimate = plan.estimate
    if first_order:
        # keras_meta's estimate with no step second order: one weight update per step.
        adapted = sum(int(np.prod(v.shape)) for v, m in
                      zip(learner.model.trainable_variables, learner.adapted_mask()) if m)
        estimate = memory.estimate(memory.activation_elements(learner.model), adapted,
                                   args.inner_steps, 1,
                                   args.meta_batch_size if learner.vectorize else 1,
                                   exact_steps=0)
    print(json.dumps({"steps": args.inner_steps, "mode": args.mode,
                      "vectorize": learner.vectorize,
                      "before_mib": before / 2**20, "peak_growth_mib": (peak - before) / 2**20,
                      "step_peak_mib": (steps_peak - traced) / 2**20,
                      "trace_seconds": trace_seconds, "seconds": float(np.median(times)),
                      "estimate_mib": estimate / 2**20, "load": os.getloadavg()[0],
                      "plan": plan._asdict()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--modes", nargs="+",
                        default=["plain", "recompute", "truncated:2", "first_order"])
    parser.add_argument("--meta-batch-size", type=int, default=32)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--queries", type=int, default=15, help="query examples per class")
    parser.add_argument("--timed", type=int, default=2, help="timed meta-steps")
    parser.add_argument("--vectorize", action="store_true",
                        help="all tasks of the meta-batch at once (tf.vectorized_map), as on "
                             "a GPU, instead of the default task loop for a conv net on CPU")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--inner-steps", type=int)
    parser.add_argument("--mode")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(f"conv4/{args.filters}, 5-way 1-shot {args.queries}-query, meta-batch "
          f"{args.meta_batch_size}, {'vectorized' if args.vectorize else 'task loop'}, "
          f"median of {args.timed} meta-steps after a traced one")
    print("| inner steps | mode | estimate (MiB): the budget it fits in | peak RSS growth (MiB) "
          "| timed steps above post-trace RSS (MiB) | s / meta-step | s to trace + 1 step "
          "| load |")
    print("|---|---|---|---|---|---|---|---|")
    # Buffers of 64 KiB and more get their own mappings, returned to the system when freed
    # (glibc would otherwise raise the threshold as they are freed and keep them in its
    # heap): the RSS then follows the memory TensorFlow holds, so the timed steps' peak
    # above the RSS after tracing is what a meta-step itself needs.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    for steps in args.steps:
        for mode in args.modes:
            if mode.startswith("truncated:") and int(mode.split(":")[1]) >= steps:
                continue  # the same graph as plain
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", "--inner-steps", str(steps), "--mode",
                 mode, "--meta-batch-size", str(args.meta_batch_size), "--filters",
                 str(args.filters), "--queries", str(args.queries), "--timed", str(args.timed)]
                + ["--vectorize"] * args.vectorize,
                capture_output=True, text=True, env=env)
            if proc.returncode:
                error = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                print(f"| {steps} | {mode} | failed (exit {proc.returncode}): {error} |",
                      flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {steps} | {mode} | {row['estimate_mib']:.1f} | "
                  f"{row['peak_growth_mib']:.0f} | {row['step_peak_mib']:.0f} | "
                  f"{row['seconds']:.2f} | {row['trace_seconds']:.1f} | {row['load']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
