"""Meta-step throughput and peak memory of MAML through `fit`, against a hand-written step.

Workloads (MAML, Adam(1e-3), second order and first order):

- ``sinusoid-1`` / ``sinusoid-5``: the MAML paper's sinusoid MLP (Input(1) -> Dense 40 relu
  -> Dense 40 relu -> Dense 1), meta-batch 25, 10 support + 10 query points, 1 or 5 inner
  steps, inner_lr 0.01, tasks from ``km.tasks.Sinusoid``.
- ``conv-pool`` / ``conv-strided``: the Omniglot-shaped 4-block conv net (4 x [Conv2D 64
  3x3 -> BatchNorm -> ReLU -> MaxPool 2], or Conv2D stride 2 instead of the max-pool, then
  Flatten -> Dense 5), 5-way 1-shot 15-query episodes of 28x28x1 images, meta-batch 32,
  1 inner step, inner_lr 0.1, tasks from ``km.tasks.FewShotClassification`` over random
  uint8 images (100 classes x 20 examples).

Execution modes of the library: ``xla`` (compile(jit_compile=True, vectorize=False)),
``xla-vmap`` (both True), ``vmap`` (jit_compile=False, vectorize=True) and ``loop`` (both
False), each through the real ``MetaLearner.fit`` path with ``steps_per_execution``; ``*``
in the table marks the mode that ``"auto"`` picks on this machine. ``hand`` is the obvious
hand-written step: a plain ``@tf.function`` (no XLA) that loops over tasks with
``tf.while_loop`` (or unrolled in Python with ``--baseline python``), takes the inner
gradients with a nested ``tf.GradientTape`` on ``model.stateless_call``, the outer
gradient, and applies Adam; it draws the same task batches (``tasks.sample(meta_batch,
step_seed(0, step))``) in Python before each call, as ``fit`` does in-graph, and is called
once per meta-step. It is traced with the library's exact BatchNormalization moments so
that it computes the same meta-gradient (Keras's own moments give a wrong second-order
gradient through BN). ``jax`` (sinusoid only, with ``--jax-python``) is the independent
JAX implementation of ``jax_maml_step.py``, run by that interpreter, so JAX need not share
the TensorFlow venv.

Protocol: each (workload, order, mode) runs in a fresh subprocess (``--one CONFIG``, which
prints one JSON line), so peak memory is that process's ``ru_maxrss`` (and the GPU
allocator's peak from ``tf.config.experimental.get_memory_info`` on a GPU). In it: build
the model from a fixed seed, one warm-up ``fit`` of N steps (tracing and compilation:
the "first" column), then ``reps`` timed ``fit`` calls of N steps each; time per
meta-step = wall time of the call / N, reported as the median over repetitions.
``speed`` is iterations/s of the mode divided by iterations/s of ``hand`` (> 1: the
library is faster). ``loss`` is the mean query loss of the last timed call: with the same
initial weights and tasks it should agree across modes (a sanity check, not a test).
XLA on CPU convolutions is ~30x slower than oneDNN (DESIGN.md §5), so it is skipped for
the conv nets on CPU unless ``--xla-cpu-conv`` is given.

``--interleave`` instead times the default mode and ``hand`` in one process, taking turns
on two models built from the same seed, and reports the median of the per-turn speeds:
with separate processes, the machine's drift between them is as large as the difference.
It also reports the largest difference between the two models' weights after the same
steps on the same tasks, which is 0 when both computed the same meta-gradients bit for bit.

Usage:

    python benchmarks/meta_step.py                 # everything
    python benchmarks/meta_step.py --quick         # sinusoid only, fewer steps and reps
    python benchmarks/meta_step.py --workloads conv-pool --orders second --json out.json
    python benchmarks/meta_step.py --workloads conv-strided --interleave --steps 4 --reps 8

Cost: every configuration pays a TensorFlow import and a trace. On 2 CPU cores under a
load average of ~7, one second-order conv meta-step (meta-batch 32) took 5-11 s and the
``vmap`` warm-up fit 120 s (5.2 GB peak RSS), so the conv defaults are small (N=2, 2 reps);
raise ``--steps``/``--reps`` on an idle machine or a GPU.

Benchmark on an idle machine: another process on one of two cores slows everything.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

WORKLOADS = {
    # name: kind, inner steps, meta-batch, inner lr, steps per execution, steps per
    # timed fit call (N), repetitions; --quick divides N and reps.
    "sinusoid-1": dict(kind="sinusoid", inner_steps=1, meta_batch=25, inner_lr=0.01,
                       spe=10, steps=50, reps=5),
    "sinusoid-5": dict(kind="sinusoid", inner_steps=5, meta_batch=25, inner_lr=0.01,
                       spe=10, steps=30, reps=5),
    "conv-pool": dict(kind="conv", strided=False, inner_steps=1, meta_batch=32, inner_lr=0.1,
                      spe=2, steps=2, reps=2),
    "conv-strided": dict(kind="conv", strided=True, inner_steps=1, meta_batch=32,
                         inner_lr=0.1, spe=2, steps=2, reps=2),
}
QUICK_WORKLOADS = ("sinusoid-1", "sinusoid-5")
MODES = ("xla", "xla-vmap", "vmap", "loop", "hand", "jax")
ORDERS = ("second", "first")
MODE_FLAGS = {"xla": (True, False), "xla-vmap": (True, True), "vmap": (False, True), "loop": (False, False)}


# ----- one configuration (runs in its own subprocess) ---------------------------------

def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _build(cfg):
    import keras
    import numpy as np

    import keras_meta as km

    keras.utils.set_random_seed(cfg.get("seed", 0))
    if cfg["kind"] == "sinusoid":
        model = keras.Sequential([
            keras.Input((1,)),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(40, activation="relu"),
            keras.layers.Dense(1),
        ])
        tasks = km.tasks.Sinusoid(shots=10, queries=10)
        loss = keras.losses.MeanSquaredError()
    else:
        layers = [keras.Input((28, 28, 1))]
        for _ in range(4):
            if cfg["strided"]:
                layers.append(keras.layers.Conv2D(64, 3, strides=2, padding="same"))
            else:
                layers.append(keras.layers.Conv2D(64, 3, padding="same"))
            layers += [keras.layers.BatchNormalization(), keras.layers.ReLU()]
            if not cfg["strided"]:
                layers.append(keras.layers.MaxPool2D(2))
        layers += [keras.layers.Flatten(), keras.layers.Dense(5)]
        model = keras.Sequential(layers)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (100 * 20, 28, 28, 1), dtype=np.uint8)
        labels = np.repeat(np.arange(100), 20)
        tasks = km.tasks.FewShotClassification(images, labels, ways=5, shots=1, queries=15)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, tasks, loss


def _hand_step(model, loss_fn, optimizer, inner_lr, inner_steps, first_order, unrolled,
               meta_batch):
    """The obvious hand-written MAML meta-step: nested tapes on stateless_call."""
    import tensorflow as tf

    variables = model.trainable_variables

    def task_loss(params, non_trainables, sx, sy, qx, qy):
        fast = list(params)
        for _ in range(inner_steps):
            with tf.GradientTape() as inner_tape:
                inner_tape.watch(fast)
                y, _ = model.stateless_call(fast, non_trainables, sx, training=True)
                support_loss = loss_fn(sy, y)
            grads = inner_tape.gradient(support_loss, fast)
            if first_order:
                grads = [tf.stop_gradient(g) for g in grads]
            fast = [p - inner_lr * g for p, g in zip(fast, grads)]
        y, _ = model.stateless_call(fast, non_trainables, qx, training=True)
        return loss_fn(qy, y)

    from keras_meta.ops import exact_batch_statistics

    @tf.function
    def step(sx, sy, qx, qy):
        # Same computation as the library: exact (second-order-correct) BN moments.
        with exact_batch_statistics():
            return _step(sx, sy, qx, qy)

    def _step(sx, sy, qx, qy):
        non_trainables = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
        if unrolled:
            with tf.GradientTape() as tape:
                params = [tf.convert_to_tensor(v) for v in variables]
                losses = [task_loss(params, non_trainables, sx[i], sy[i], qx[i], qy[i])
                          for i in range(meta_batch)]
                loss = tf.add_n(losses) / meta_batch
            grads = tape.gradient(loss, variables)
        else:
            def body(i, grad_sum, loss_sum):
                with tf.GradientTape() as tape:
                    params = [tf.convert_to_tensor(v) for v in variables]
                    loss = task_loss(params, non_trainables, sx[i], sy[i], qx[i], qy[i])
                grads = tape.gradient(loss, variables)
                # add_n rather than `+`: grappler's remapper fuses MatMul + Add and
                # rejects the 2-D "bias" of a kernel gradient.
                return (i + 1, [tf.math.add_n([a, g]) for a, g in zip(grad_sum, grads)],
                        loss_sum + loss)

            n = tf.shape(sx)[0]
            _, grad_sum, loss_sum = tf.while_loop(
                lambda i, *_: i < n, body,
                (tf.constant(0), [tf.zeros_like(v) for v in variables], tf.constant(0.0)))
            count = tf.cast(n, tf.float32)
            grads = [g / count for g in grad_sum]
            loss = loss_sum / count
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


def _setup_tf(cfg):
    import tensorflow as tf

    if cfg.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(cfg["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(cfg["threads"])
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return gpus


def _auto_mode(cfg, model):
    """The mode that "auto" picks for this model here (the library's own rule)."""
    import keras_meta as km

    learner = km.MAML(model, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                      first_order=cfg["order"] == "first")
    learner.compile(jit_compile="auto", vectorize="auto")
    learner._resolve_execution()
    return learner, {flags: mode for mode, flags in MODE_FLAGS.items()}[learner.jit, learner.vectorize]


def _runner(cfg, mode, model, tasks, loss_fn, learner):
    """run(num): `num` meta-steps in `mode`; returns (mean loss, meta-steps run)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_meta as km

    mb = cfg["meta_batch"]
    if mode == "hand":
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        step = _hand_step(model, loss_fn, optimizer, cfg["inner_lr"], cfg["inner_steps"],
                          cfg["order"] == "first", cfg.get("baseline") == "python", mb)
        counter = [0]

        def run(num):
            counter_before = counter[0]
            losses = []
            for _ in range(num):
                batch = tasks.sample(mb, km.tasks.step_seed(0, counter[0]))
                counter[0] += 1
                losses.append(step(*(tf.convert_to_tensor(np.asarray(v)) for v in batch)))
            # float() also waits for the device.
            return float(np.mean([float(v) for v in losses])), counter[0] - counter_before
        return run

    jit, vectorize = MODE_FLAGS[mode]
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit,
                    vectorize=vectorize, steps_per_execution=cfg["spe"])

    def run(num):
        before = int(learner.task_step.numpy())
        history = learner.fit(tasks, meta_batch_size=mb, epochs=1, steps_per_epoch=num,
                              verbose=0, seed=0)
        # Meta-steps actually run (task_step counts them), in case Keras rounds a
        # partial execution up to steps_per_execution.
        return float(history.history["loss"][-1]), int(learner.task_step.numpy()) - before
    return run


def _timed(run, num):
    start = time.perf_counter()
    loss, done = run(num)
    return (time.perf_counter() - start) / done, loss, done


def run_one(cfg):
    import tensorflow as tf

    gpus = _setup_tf(cfg)
    model, tasks, loss_fn = _build(cfg)
    n, reps = cfg["steps"], cfg["reps"]
    result = {"config": cfg, "device": "GPU" if gpus else "CPU"}
    learner, result["auto"] = _auto_mode(cfg, model)
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    rss_setup = _maxrss_mib()
    run = _runner(cfg, cfg["mode"], model, tasks, loss_fn, learner)

    start = time.perf_counter()
    run(n)
    result["first_s"] = time.perf_counter() - start
    times = []
    for _ in range(reps):
        seconds, loss, done = _timed(run, n)
        times.append(seconds)
    result.update(
        sec_per_step=statistics.median(times),
        times=times,
        its=1.0 / statistics.median(times),
        steps_run=done,
        loss=loss,
        rss_setup_mib=rss_setup,
        rss_peak_mib=_maxrss_mib(),
    )
    if gpus:
        result["gpu_peak_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return result


def run_interleaved(cfg):
    """The default mode and the hand-written step in one process, on two models built from
    the same seed, taking turns (which goes first alternates): speed = hand's time per step
    over the default's, per turn, so that the machine's drift cancels out."""
    import numpy as np

    _setup_tf(cfg)
    model, tasks, loss_fn = _build(cfg)
    learner, auto = _auto_mode(cfg, model)
    hand_model = _build(cfg)[0]
    runs = {auto: _runner(cfg, auto, model, tasks, loss_fn, learner),
            "hand": _runner(cfg, "hand", hand_model, tasks, loss_fn, None)}
    for run in runs.values():
        run(cfg["steps"])
    times = {name: [] for name in runs}
    for turn in range(cfg["reps"]):
        for name in (list(runs) if turn % 2 == 0 else list(runs)[::-1]):
            times[name].append(_timed(runs[name], cfg["steps"])[0])
    speeds = [h / d for h, d in zip(times["hand"], times[auto])]
    # Both took the same steps on the same tasks from the same weights, so this gap shows
    # whether they computed the same meta-gradients (0.0 when bit for bit).
    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(model.trainable_variables, hand_model.trainable_variables))
    return {"config": cfg, "auto": auto, "times": times, "speeds": speeds,
            "speed": statistics.median(speeds), "weight_gap": gap}


# ----- the driver ---------------------------------------------------------------------

def _has_gpu():
    """Whether TensorFlow sees a GPU (asked in a subprocess: the driver stays TF-free)."""
    code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; import tensorflow as tf; "
            "print(len(tf.config.list_physical_devices('GPU')))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300)
        return int(out.stdout.strip().splitlines()[-1]) > 0
    except Exception:  # noqa: BLE001
        return False


def _run_subprocess(cfg, timeout, jax_python=None):
    if cfg["mode"] == "jax":
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jax_maml_step.py")
        cmd = [jax_python, script, "--one", json.dumps(cfg)]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": cfg, "error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"config": cfg, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def _fmt(value, spec, width):
    return (format(value, spec) if value is not None else "-").rjust(width)


def _table(results, on_gpu):
    head = (f"{'workload':<13}{'order':<8}{'mode':<7}{'it/s':>9}{'ms/it':>10}{'speed':>8}"
            f"{'first s':>9}{'peak RSS':>10}{'dRSS':>8}"
            + (f"{'GPU peak':>10}" if on_gpu else "") + f"{'loss':>11}")
    lines = [head, "-" * len(head)]
    hand = {(r["config"]["workload"], r["config"]["order"]): r for r in results
            if r["config"]["mode"] == "hand" and "its" in r}
    previous = None
    for r in results:
        c = r["config"]
        key = (c["workload"], c["order"])
        if previous is not None and previous != key:
            lines.append("")
        previous = key
        auto = r.get("auto") == c["mode"]
        mode = c["mode"] + ("*" if auto else "")
        prefix = f"{c['workload']:<13}{c['order']:<8}{mode:<7}"
        if "skipped" in r or "error" in r:
            lines.append(prefix + ("skipped: " + r["skipped"] if "skipped" in r
                                   else "error: " + r["error"])[:110])
            continue
        base = hand.get(key)
        speed = r["its"] / base["its"] if base else None
        lines.append(
            prefix + _fmt(r["its"], ".1f", 9) + _fmt(1e3 * r["sec_per_step"], ".1f", 10)
            + _fmt(speed, ".2f", 8) + _fmt(r["first_s"], ".1f", 9)
            + _fmt(r["rss_peak_mib"], ".0f", 10)
            + _fmt(r["rss_peak_mib"] - r["rss_setup_mib"], ".0f", 8)
            + (_fmt(r.get("gpu_peak_mib"), ".0f", 10) if on_gpu else "")
            + _fmt(r["loss"], ".4g", 11))
    return "\n".join(lines)


def _interleaved_line(r):
    c = r["config"]
    head = f"{c['workload']} {c['order']}: "
    if "error" in r:
        return head + "error: " + r["error"]
    default, hand = r["times"][r["auto"]], r["times"]["hand"]
    return (head + f"default ({r['auto']}) / hand-written = {r['speed']:.2f} (median of "
            f"{len(r['speeds'])} turns; per turn " + ", ".join(f"{v:.2f}" for v in r["speeds"])
            + f"; ms/step default {1e3 * statistics.median(default):.1f}, hand "
            f"{1e3 * statistics.median(hand):.1f}; largest weight difference after the "
            f"same steps {r['weight_gap']:.2g})")


def _print_summary(results, on_gpu):
    print()
    print("MAML meta-step through fit (median of reps); speed = it/s / hand-written it/s "
          "(>1 faster);")
    print("first = warm-up fit incl. tracing/compile; peak RSS / dRSS (over post-setup) "
          "in MiB; * = mode 'auto' picks")
    shown = set()
    for r in results:
        c = r["config"]
        if c["workload"] in shown:
            continue
        shown.add(c["workload"])
        print(f"  {c['workload']}: meta-batch {c['meta_batch']}, {c['inner_steps']} inner "
              f"step(s), N={c['steps']} steps/fit, steps_per_execution={c['spe']}, "
              f"{c['reps']} reps")
    print()
    print(_table(results, on_gpu))
    for line in _against_jax(results):
        print(line)


def _against_jax(results):
    """One line per (workload, order) with a JAX result: the default mode's it/s over JAX's."""
    done = [r for r in results if "its" in r]
    for r in done:
        c = r["config"]
        if c["mode"] != "jax":
            continue
        default = [d for d in done if d["config"]["workload"] == c["workload"]
                   and d["config"]["order"] == c["order"] and d.get("auto") == d["config"]["mode"]]
        if default:
            d = default[0]
            yield (f"{c['workload']} {c['order']}: default ({d['config']['mode']}) / JAX = "
                   f"{d['its'] / r['its']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="sinusoid workloads only, fewer steps and repetitions")
    parser.add_argument("--workloads", help="comma list of: " + ", ".join(WORKLOADS))
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma list of: " + ", ".join(MODES))
    parser.add_argument("--orders", default=",".join(ORDERS), help="second,first")
    parser.add_argument("--steps", type=int, help="meta-steps per timed fit call (N)")
    parser.add_argument("--reps", type=int, help="timed repetitions")
    parser.add_argument("--steps-per-execution", type=int, dest="spe")
    parser.add_argument("--baseline", choices=("while", "python"), default="while",
                        help="hand-written step loops over tasks with tf.while_loop or "
                             "unrolled in Python")
    parser.add_argument("--xla-cpu-conv", action="store_true",
                        help="also run XLA for the conv nets on CPU (very slow)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra/inter-op threads (0: TensorFlow's default)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    parser.add_argument("--jax-python", help="a Python with JAX installed: adds the `jax` mode "
                                             "(jax_maml_step.py) to the sinusoid workloads")
    parser.add_argument("--json", help="write all results to this path")
    parser.add_argument("--interleave", action="store_true",
                        help="per workload and order, time the default mode and the "
                             "hand-written step taking turns in one process (--reps turns "
                             "each) and report the median per-turn speed")
    args = parser.parse_args()

    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(run_interleaved(cfg) if cfg["mode"] == "interleave" else run_one(cfg)),
              flush=True)
        return

    names = (args.workloads.split(",") if args.workloads
             else list(QUICK_WORKLOADS if args.quick else WORKLOADS))
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    modes = args.modes.split(",")
    orders = args.orders.split(",")
    if set(modes) - set(MODES) or set(orders) - set(ORDERS):
        parser.error("bad --modes or --orders")
    on_gpu = _has_gpu()
    print(f"device: {'GPU' if on_gpu else 'CPU'}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}; baseline: {args.baseline}", flush=True)

    results = []
    started = time.perf_counter()
    for name in names:
        spec = dict(WORKLOADS[name])
        if args.quick:
            spec["steps"] = max(spec["spe"], spec["steps"] // 2)
            spec["reps"] = min(3, spec["reps"])
        spec["steps"] = args.steps or spec["steps"]
        # Whole executions only: N is rounded up to a multiple of steps_per_execution.
        spec["spe"] = args.spe or spec["spe"]
        spec["steps"] = -(-spec["steps"] // spec["spe"]) * spec["spe"]
        spec["reps"] = args.reps or spec["reps"]
        for order in orders:
            if args.interleave:
                cfg = dict(spec, workload=name, order=order, mode="interleave",
                           baseline=args.baseline, threads=args.threads)
                r = _run_subprocess(cfg, args.timeout)
                results.append(r)
                print(_interleaved_line(r), flush=True)
                continue
            for mode in modes:
                cfg = dict(spec, workload=name, order=order, mode=mode,
                           baseline=args.baseline, threads=args.threads)
                if mode == "xla" and spec["kind"] == "conv" and not on_gpu \
                        and not args.xla_cpu_conv:
                    results.append({"config": cfg, "skipped": "XLA:CPU convs (--xla-cpu-conv)"})
                    continue
                if mode == "jax" and (spec["kind"] != "sinusoid" or not args.jax_python):
                    continue  # the JAX reference exists for the sinusoid MLP only
                t0 = time.perf_counter()
                r = _run_subprocess(cfg, args.timeout, args.jax_python)
                results.append(r)
                status = (f"{r['its']:.1f} it/s" if "its" in r else r.get("error", "?"))
                print(f"  [{time.perf_counter() - started:6.0f} s] {name} {order} {mode}: "
                      f"{status} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                      flush=True)

    if not args.interleave:
        _print_summary(results, on_gpu)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
