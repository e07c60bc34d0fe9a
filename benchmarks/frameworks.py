"""keras_meta's default path against an independent JAX implementation, rounds alternating.

Workloads (issue 21): second-order MAML on the sinusoid MLP (1 -> 40 relu -> 40 relu -> 1),
meta-batch 25, 10 support + 10 query points, inner lr 0.01, 1 and 5 inner steps, Adam(1e-3).

- ``keras_meta``: the default path as a README reader sets it up: `km.MAML(model, ...)`,
  `compile(steps_per_execution=50)` (execution mode "auto"), `fit(km.tasks.Sinusoid(...),
  meta_batch_size=25, ...)`; on this version the tasks are sampled in the graph.
- ``jax``: `jax_maml_step.py` (one `jax.jit` step, `jax.vmap` over tasks, `jax.grad`
  through the inner loop, tasks drawn with NumPy before each step), run by a Python that
  has JAX (`--jax-python`), so JAX never enters the TensorFlow environment or the tests.

Protocol: one worker process per (framework, workload), all started first; each worker
builds its model and times its first call (trace + compile: the "first call" column),
then waits. The driver then runs `--rounds` rounds; in each it asks every worker, in turn
(order alternating between rounds), for `--steps` meta-steps and records meta-steps/s of
that request (wall clock, the device synchronised) and of CPU time (process time of the
worker: less sensitive to other processes on a loaded machine), with the 1-minute load
average. Reported: medians and [min-max] over rounds, and the keras_meta / JAX ratio of
the medians.

Usage:

    python -m venv /tmp/jax && /tmp/jax/bin/pip install jax numpy   # or: pip install '.[bench]'
    python benchmarks/frameworks.py --jax-python /tmp/jax/bin/python --rounds 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "sinusoid-1": dict(inner_steps=1, meta_batch=25, inner_lr=0.01, order="second", seed=0),
    "sinusoid-5": dict(inner_steps=5, meta_batch=25, inner_lr=0.01, order="second", seed=0),
}
STEPS_PER_EXECUTION = 50


def keras_meta_runner(cfg):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    import keras_meta as km

    keras.utils.set_random_seed(cfg["seed"])
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(40, activation="relu"),
        keras.layers.Dense(1),
    ])
    learner = km.MAML(model, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                      first_order=cfg["order"] == "first")
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=STEPS_PER_EXECUTION)
    tasks = km.tasks.Sinusoid(shots=10, queries=10)

    def run(num):
        history = learner.fit(tasks, meta_batch_size=cfg["meta_batch"], epochs=1,
                              steps_per_epoch=num, verbose=0, seed=0)
        return float(history.history["loss"][-1])

    return run, lambda: {"summary": learner.execution_summary}


def jax_runner(cfg):
    sys.path.insert(0, HERE)
    import jax

    from jax_maml_step import build

    return build(cfg), lambda: {"jax": jax.__version__}


def worker(framework, cfg, first_steps):
    """Builds, times the first call, then serves `steps` requests read from stdin (`info()`
    describes the run once the first call has set it up)."""
    run, info = (keras_meta_runner if framework == "keras_meta" else jax_runner)(cfg)
    start = time.perf_counter()
    run(first_steps)
    print(json.dumps({"first_s": time.perf_counter() - start, **info()}), flush=True)
    for line in sys.stdin:
        steps = int(line)
        wall, cpu = time.perf_counter(), time.process_time()
        loss = run(steps)
        print(json.dumps({"wall_s": time.perf_counter() - wall,
                          "cpu_s": time.process_time() - cpu, "loss": loss}), flush=True)


def _spread(values):
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--jax-python", required=False, help="a Python with JAX installed")
    parser.add_argument("--workloads", default=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=500, help="meta-steps per timed request")
    parser.add_argument("--json", help="write the per-round records here")
    args = parser.parse_args()
    if args.worker:
        framework, name = args.worker
        worker(framework, CONFIGS[name], STEPS_PER_EXECUTION)
        return
    if args.steps % STEPS_PER_EXECUTION:
        parser.error(f"--steps must be a multiple of {STEPS_PER_EXECUTION}")
    pythons = {"keras_meta": sys.executable}
    if args.jax_python:
        pythons["jax"] = args.jax_python
    workers = {}
    for name in args.workloads.split(","):
        for framework, python in pythons.items():
            # One at a time, so that first calls do not compete with each other.
            process = subprocess.Popen(
                [python, os.path.abspath(__file__), "--worker", framework, name],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
            first = json.loads(process.stdout.readline())
            workers[name, framework] = (process, first)
            print(f"{name} {framework}: first call {first['first_s']:.2f} s "
                  f"(load {os.getloadavg()[0]:.1f}) {first.get('summary') or first.get('jax')}",
                  flush=True)
    records = []
    for r in range(args.rounds):
        order = list(workers) if r % 2 == 0 else list(reversed(workers))
        for key in order:
            process, _ = workers[key]
            load = os.getloadavg()[0]
            process.stdin.write(f"{args.steps}\n")
            process.stdin.flush()
            result = json.loads(process.stdout.readline())
            records.append({"workload": key[0], "framework": key[1], "round": r, "load": load,
                            "its": args.steps / result["wall_s"],
                            "its_cpu": args.steps / result["cpu_s"], "loss": result["loss"]})
    for process, _ in workers.values():
        process.stdin.close()
        process.wait()
    print("\n| workload | framework | meta-steps/s (wall) | per CPU-second | first call s | load |")
    print("| --- | --- | --- | --- | --- | --- |")
    medians = {}
    for key, (_, first) in workers.items():
        rows = [x for x in records if (x["workload"], x["framework"]) == key]
        medians[key] = statistics.median(x["its"] for x in rows)
        loads = [x["load"] for x in rows]
        print(f"| {key[0]} | {key[1]} | {_spread([x['its'] for x in rows])} | "
              f"{_spread([x['its_cpu'] for x in rows])} | {first['first_s']:.2f} | "
              f"{min(loads):.1f}-{max(loads):.1f} |")
    for name in args.workloads.split(","):
        if (name, "jax") in medians:
            print(f"{name}: keras_meta / JAX = "
                  f"{medians[name, 'keras_meta'] / medians[name, 'jax']:.2f} (wall-clock medians)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
