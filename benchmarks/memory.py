"""Peak memory and time per meta-step of second-order MAML against inner steps, by mode.

conv4 (64 filters, BatchNorm, max-pool), 5-way 1-shot, 15 queries, meta-batch 32,
random 28x28 images, the default execution (the task loop for a conv net on CPU), for
`second_order_mode` "plain", "recompute", "truncated:k" and first order (FOMAML) as the
floor. Each configuration runs in its own subprocess: peak RSS is
`resource.getrusage(RUSAGE_SELF).ru_maxrss` after `fit` minus the RSS the process holds
just before `fit` (model, data and TensorFlow loaded); the time is the median of the timed
meta-steps after one untimed traced step. A second column separates what the meta-steps
themselves hold from tracing: the peak RSS of the timed steps (VmHWM reset through
/proc/self/clear_refs after the traced step) above the RSS right after tracing.

    python benchmarks/memory.py --steps 1 5 10 20 --modes plain recompute truncated:2 first_order
    python benchmarks/memory.py --worker --inner-steps 10 --mode recompute   # one configuration

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

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400 * 20, 28, 28, 1), dtype=np.uint8)
    tasks = km.tasks.FewShotClassification(images, np.repeat(np.arange(400), 20), ways=5,
                                           shots=1, queries=15)
    keras.utils.set_random_seed(0)
    first_order = args.mode == "first_order"
    learner = km.MAML(km.models.conv4(5, (28, 28, 1), args.filters), inner_lr=0.4,
                      inner_steps=args.inner_steps, first_order=first_order)
    mode = None if first_order else args.mode
    learner.compile(loss=tasks.loss, second_order_mode=mode)
    before = current_rss()
    learner.fit(tasks, meta_batch_size=args.meta_batch_size, steps_per_epoch=1, verbose=0)
    traced = current_rss()
    reset_peak_rss()
    times = []
    for _ in range(args.timed):
        start = time.perf_counter()
        learner.fit(tasks, meta_batch_size=args.meta_batch_size, steps_per_epoch=1,
                    verbose=0)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steps_peak = peak_rss_since_reset()
    print(json.dumps({"steps": args.inner_steps, "mode": args.mode,
                      "before_mib": before / 2**20, "peak_growth_mib": (peak - before) / 2**20,
                      "step_peak_mib": (steps_peak - traced) / 2**20,
                      "seconds": float(np.median(times)),
                      "plan": None if learner.memory_plan is None else
                      learner.memory_plan._asdict()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--modes", nargs="+",
                        default=["plain", "recompute", "truncated:2", "first_order"])
    parser.add_argument("--meta-batch-size", type=int, default=32)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--timed", type=int, default=2, help="timed meta-steps")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--inner-steps", type=int)
    parser.add_argument("--mode")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(f"conv4/{args.filters}, 5-way 1-shot 15-query, meta-batch {args.meta_batch_size}, "
          f"median of {args.timed} meta-steps after a traced one")
    print("| inner steps | mode | peak RSS growth (MiB) | of which timed steps above "
          "post-trace RSS (MiB) | s / meta-step |")
    print("|---|---|---|---|---|")
    for steps in args.steps:
        for mode in args.modes:
            if mode.startswith("truncated:") and int(mode.split(":")[1]) >= steps:
                continue  # the same graph as plain
            out = subprocess.run(
                [sys.executable, __file__, "--worker", "--inner-steps", str(steps), "--mode",
                 mode, "--meta-batch-size", str(args.meta_batch_size), "--filters",
                 str(args.filters), "--timed", str(args.timed)],
                check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"| {steps} | {mode} | {row['peak_growth_mib']:.0f} | "
                  f"{row['step_peak_mib']:.0f} | {row['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
