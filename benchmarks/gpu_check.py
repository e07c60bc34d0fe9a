"""The supervised part of `gpu_check.sh`: what the default path does on a GPU.

Subcommands:

- ``preflight``: in seconds, whether this Python can run keras_meta on a GPU at all:
  TensorFlow importable and built with CUDA, `tf.config.list_physical_devices("GPU")`
  non-empty, Keras 3 on the TensorFlow backend and the `keras_meta._core` extension
  loadable (it is built for one Python version). Prints one line per check and exits 3
  where one fails.
- ``supervised`` / ``placement``: for the sinusoid MLP (1 and 5 inner steps, meta-batch 25, second order)
  and the 4-block conv net with max-pool (5-way 1-shot q15, meta-batch 32, second order),
  as a README reader sets MAML up (`compile()` defaults but `steps_per_execution`):
  the execution mode "auto" picks (and the learner's own account of it where it gives
  one), the first `fit` call's time (trace + compile), meta-steps/s of the following
  calls (median of `--reps`, with the range) and the GPU allocator's peak memory; or
  (``placement``, a process of its own) where the ops of the first `fit` call's functions
  were placed (TensorFlow's device-placement log, counted per device; every op type that
  ran on the CPU is listed).
- ``sampler``: values of the in-graph regression samplers (XLA on the GPU) that differ
  from the C++ sampler's, bit for bit, per family and field (expected: all 0).

Usage (from the repository root, with a Python that has TensorFlow with CUDA and
keras_meta installed):

    python benchmarks/gpu_check.py preflight && python benchmarks/gpu_check.py supervised
    python benchmarks/gpu_check.py placement --workloads sinusoid-1
"""

import argparse
import collections
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# name: meta_step.py workload config, steps_per_execution, meta-steps per timed fit call.
WORKLOADS = {
    "sinusoid-1": (dict(kind="sinusoid", inner_steps=1, meta_batch=25, inner_lr=0.01), 50, 500),
    "sinusoid-5": (dict(kind="sinusoid", inner_steps=5, meta_batch=25, inner_lr=0.01), 50, 250),
    "conv-pool": (dict(kind="conv", strided=False, inner_steps=1, meta_batch=32, inner_lr=0.1),
                  5, 20),
}


def preflight():
    """Exits 3 with a one-line reason when keras_meta cannot run on a GPU here."""
    print(f"python: {sys.executable} {sys.version.split()[0]}", flush=True)
    try:
        import tensorflow as tf
    except Exception as error:  # noqa: BLE001 - any import failure is the answer
        print(f"FAIL: TensorFlow is not importable here ({type(error).__name__}: {error})")
        sys.exit(3)
    built_with_cuda = tf.test.is_built_with_cuda()
    gpus = tf.config.list_physical_devices("GPU")
    print(f"tensorflow {tf.__version__}, built with CUDA: {built_with_cuda}, GPUs: {gpus}")
    if not built_with_cuda or not gpus:
        print("FAIL: this TensorFlow sees no GPU")
        sys.exit(3)
    try:
        import keras

        import keras_meta._core  # noqa: F401 - the compiled extension is per Python version
    except Exception as error:  # noqa: BLE001
        print(f"FAIL: keras_meta is not importable here ({type(error).__name__}: {error})")
        sys.exit(3)
    if keras.backend.backend() != "tensorflow":
        print(f"FAIL: Keras runs on {keras.backend.backend()}, not TensorFlow")
        sys.exit(3)
    print("OK: TensorFlow with CUDA sees a GPU; keras_meta imports")


@contextlib.contextmanager
def captured_output():
    """Collects what the process (C++ included) writes to file descriptors 1 and 2: the
    placement log goes to both."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        lines = []
        try:
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode(errors="replace").splitlines()
                         if "placer.cc" not in line)  # the stderr copy of a stdout line


# "name: (OpType): /job:localhost/replica:0/task:0/device:GPU:0" (graph functions) and
# "Executing op OpType in device /job:.../device:CPU:0" (eager ops).
_PLACED = re.compile(r"\((\w+)\): /job:[^ ]*device:(\w+):\d+")
_EAGER = re.compile(r"Executing op (\w+) in device /job:[^ ]*device:(\w+):\d+")


def placement(lines):
    """{device type: count} and the op types placed on the CPU, from the placement log."""
    counts, cpu_ops = collections.Counter(), collections.Counter()
    for line in lines:
        match = _PLACED.search(line) or _EAGER.search(line)
        if match:
            op, device = match.groups()
            counts[device] += 1
            if device == "CPU":
                cpu_ops[op] += 1
    return dict(counts), dict(cpu_ops)


def _learner(name):
    import keras

    import keras_meta as km
    from meta_step import _build

    cfg, spe, steps = WORKLOADS[name]
    model, tasks, _ = _build(cfg)
    learner = km.MAML(model, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                      first_order=False)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=spe)

    def fit(num):
        start = time.perf_counter()
        learner.fit(tasks, meta_batch_size=cfg["meta_batch"], epochs=1, steps_per_epoch=num,
                    verbose=0, seed=0)
        return time.perf_counter() - start

    return learner, fit, spe, steps


def run_workload(name, reps):
    import tensorflow as tf

    learner, fit, spe, steps = _learner(name)
    # No GPU: a dry run of this script on a CPU machine, without memory figures.
    gpu = "GPU:0" if tf.config.list_physical_devices("GPU") else None
    if gpu:
        tf.config.experimental.reset_memory_stats(gpu)
    first = fit(spe)
    times = [fit(steps) / steps for _ in range(reps)]
    return {
        "workload": name,
        "auto": {"jit_compile": learner.jit, "vectorize": learner.vectorize},
        "summary": getattr(learner, "execution_summary", None),
        "steps_per_execution": spe,
        "first_call_s": round(first, 2),
        "meta_steps_per_s": round(1.0 / statistics.median(times), 1),
        "range": [round(1.0 / max(times), 1), round(1.0 / min(times), 1)],
        "gpu_peak_mib": gpu and round(tf.config.experimental.get_memory_info(gpu)["peak"] / 2**20, 1),
    }


def run_placement(name, reps):
    """Where the ops of the first call's functions ran (a process of its own: the placement
    log slows the calls it covers, and only a context started with it logs graph ops)."""
    del reps
    import tensorflow as tf

    learner, fit, spe, _ = _learner(name)
    with captured_output() as log:
        fit(spe)
    tf.debugging.set_log_device_placement(False)
    counts, cpu_ops = placement(log)
    return {"workload": name, "placement": counts, "ops_on_cpu": cpu_ops}


def check_sampler():
    """Whether the in-graph regression samplers, compiled by XLA on the GPU, equal the C++
    sampler bit for bit (tasks/graph.py: float64 `sin` and fused multiply-adds are where
    a device could differ)."""
    import numpy as np
    import tensorflow as tf

    import keras_meta as km
    from keras_meta.tasks.graph import graph_sampler

    families = [km.tasks.Sinusoid(), km.tasks.Linear(), km.tasks.Polynomial(degree=5),
                km.tasks.StepFunction()]
    draw = tf.function(lambda low, high: [graph_sampler(f)(1000, (low, high)) for f in families],
                       jit_compile=True)
    differing = {}
    for seed in (0, 7, 2**63 + 5):
        with tf.device("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"):
            got = draw(tf.constant(seed & 0xFFFFFFFF, tf.uint32), tf.constant(seed >> 32, tf.uint32))
        for family, batch in zip(families, got):
            for field, g, w in zip(km.tasks.TaskBatch._fields, batch, family.sample(1000, seed)):
                count = int(np.sum(g.numpy().view(np.uint32) != w.view(np.uint32)))
                key = f"{type(family).__name__}.{field}"
                differing[key] = differing.get(key, 0) + count
    print(json.dumps({"sampler_values_differing_from_cpp": differing}), flush=True)


def each_workload(run, names, reps):
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    for name in names:
        try:
            result = run(name, reps)
        except Exception as error:  # noqa: BLE001 - report and go on to the next workload
            result = {"workload": name, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("preflight", "supervised", "placement", "sampler"))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    # TensorFlow logs the device placement at INFO level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.command == "placement" else "1")
    if args.command == "preflight":
        preflight()
        return
    if args.command == "sampler":
        check_sampler()
        return
    if args.command == "placement":
        import tensorflow as tf

        # Before the context starts: the placer of graph functions reads it from there.
        tf.debugging.set_log_device_placement(True)
    run = run_placement if args.command == "placement" else run_workload
    each_workload(run, args.workloads.split(","), args.reps)


if __name__ == "__main__":
    main()
