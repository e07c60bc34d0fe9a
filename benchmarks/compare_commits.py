"""Meta-steps/s of the default `fit` path for two source trees of keras_meta, interleaved.

Answers "is the new code slower than the old?" on a busy machine: each tree runs in its
own long-lived worker process (its own TensorFlow, its own trace), and the driver has
them take turns, one timed `fit` each per round, the order alternating between rounds
(old-new, new-old, ...). Load from other processes then falls on both sides alike, which
separate runs minutes apart do not give; the per-round ratio new/old cancels most of the
drift, and its median is the figure to read.

The workload is what a README reader gets: ``km.MAML(model, inner_lr, inner_steps,
first_order=False)``, ``compile(optimizer=Adam(1e-3), steps_per_execution=S)`` with every
other setting at its default (``jit_compile``/``vectorize`` "auto"), and ``fit`` on the
workloads of ``benchmarks/meta_step.py`` (same models, task families, meta-batches and
inner learning rates, built by its ``_build`` from the same seed, so both trees start from
identical weights and draw identical task batches).

Per tree: one warm-up ``fit`` of N meta-steps (tracing and compilation, reported as
"first"; which tree warms up and times first alternates between workloads), then
``--rounds`` timed ``fit`` calls of N meta-steps each; time per meta-step = wall time
of the call / meta-steps run. The process's CPU time per meta-step (all threads) is
reported too: other processes on the cores stretch wall time far more than CPU time,
so its per-round ratio new/old is the steadier of the two under load. After the last
round both workers save their weights and the driver reports the largest difference: both
trees ran the same steps on the same tasks, so it is 0 when they computed the same
meta-gradients bit for bit.

A tree is a directory holding the ``keras_meta`` package with its built ``_core``
extension (e.g. a ``git worktree`` with the ``.so`` copied in). The worker puts it first
on ``sys.path`` and drops any import finder that would resolve ``keras_meta`` elsewhere
(an editable install's redirecting finder wins over ``PYTHONPATH`` otherwise), and checks
where ``keras_meta`` and ``keras_meta._core`` were imported from.

Usage:

    git worktree add --detach /tmp/km_old e0ff154
    git worktree add --detach /tmp/km_new HEAD
    cp build/cp311-*/_core*.so /tmp/km_old/keras_meta/   # and /tmp/km_new/keras_meta/
    python benchmarks/compare_commits.py /tmp/km_old /tmp/km_new \\
        --workloads sinusoid-1,sinusoid-5 --steps 200 --rounds 7
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# ----- the worker (one per tree) --------------------------------------------------------

def _import_from(tree):
    """Imports keras_meta from `tree`, whatever else the interpreter has installed."""
    import importlib.machinery

    tree = os.path.realpath(tree)
    sys.path.insert(0, tree)
    kept = []
    for finder in sys.meta_path:
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_spec"):
            spec = finder.find_spec("keras_meta", None)
            if spec is not None and not os.path.realpath(spec.origin or "").startswith(tree):
                continue
        kept.append(finder)
    sys.meta_path[:] = kept

    import keras_meta
    import keras_meta._core

    for module in (keras_meta, keras_meta._core):
        if not os.path.realpath(module.__file__).startswith(tree + os.sep):
            raise RuntimeError(f"Expected {module.__name__} from {tree}. "
                               f"Received: {module.__file__}")
    return keras_meta


def _reply(payload):
    print(json.dumps(payload), flush=True)


def worker(tree, cfg):
    """Serves `warmup N`, `time N` and `save PATH` commands from stdin, one JSON line each."""
    import keras
    import numpy as np

    km = _import_from(tree)
    from meta_step import _build

    model, tasks, _ = _build(cfg)
    learner = km.MAML(model, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                      first_order=cfg["order"] == "first")
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=cfg["spe"])

    def fit(num):
        before = int(learner.task_step.numpy())
        start, cpu_start = time.perf_counter(), time.process_time()
        history = learner.fit(tasks, meta_batch_size=cfg["meta_batch"], epochs=1,
                              steps_per_epoch=num, verbose=0, seed=0)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        # task_step counts the meta-steps run, in case Keras rounds a partial execution up.
        done = int(learner.task_step.numpy()) - before
        return {"seconds": seconds, "cpu_seconds": cpu, "steps": done,
                "loss": float(history.history["loss"][-1])}

    _reply({"ready": True, "keras_meta": km.__file__})
    for line in sys.stdin:
        command, argument = line.split()
        if command == "save":
            np.savez(argument, *[np.asarray(v) for v in learner.trainable_variables])
            _reply({"saved": argument})
        else:
            _reply(fit(int(argument)))


# ----- the driver -------------------------------------------------------------------------

class Worker:
    def __init__(self, tree, cfg):
        script = os.path.abspath(__file__)
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", tree, "--config", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command=None):
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"worker exited with {self.proc.wait()} (its stderr is above)")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def compare(trees, names, cfg, swap=False):
    """Warm-up and interleaved timed fits of both trees on one workload; `swap`: the second
    tree goes first (warm-up and first round)."""
    import numpy as np

    workers = {name: Worker(tree, cfg) for name, tree in zip(names, trees)}
    try:
        for w in workers.values():
            w.ask()
        order = names[::-1] if swap else names
        # Warm-ups one after the other, so that neither traces while the other runs.
        first = {name: workers[name].ask(f"warmup {cfg['steps']}")["seconds"] for name in order}
        times = {name: [] for name in names}
        cpu = {name: [] for name in names}
        loss = {}
        for turn in range(cfg["rounds"]):
            for name in (order if turn % 2 == 0 else order[::-1]):
                r = workers[name].ask(f"time {cfg['steps']}")
                times[name].append(r["seconds"] / r["steps"])
                cpu[name].append(r["cpu_seconds"] / r["steps"])
                loss[name] = r["loss"]
        with tempfile.TemporaryDirectory() as tmp:
            weights = {}
            for name, w in workers.items():
                path = os.path.join(tmp, name + ".npz")
                w.ask(f"save {path}")
                with np.load(path) as f:
                    weights[name] = [f[k] for k in sorted(f.files, key=lambda k: int(k[4:]))]
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(*weights.values()))
    finally:
        for w in workers.values():
            w.close()
    ratios = [times[names[0]][i] / times[names[1]][i] for i in range(cfg["rounds"])]
    cpu_ratios = [cpu[names[1]][i] / cpu[names[0]][i] for i in range(cfg["rounds"])]
    return {"config": cfg, "first_s": first, "sec_per_step": times, "cpu_per_step": cpu,
            "loss": loss, "speed_ratios": ratios, "cpu_ratios": cpu_ratios, "weight_gap": gap}


def _summary(r, names):
    old, new = names
    c = r["config"]
    lines = [f"{c['workload']} ({c['inner_steps']} inner step(s), {c['order']} order, "
             f"meta-batch {c['meta_batch']}, N={c['steps']} meta-steps per fit, "
             f"steps_per_execution={c['spe']}, {c['rounds']} rounds)"]
    for name in names:
        its = [1.0 / t for t in r["sec_per_step"][name]]
        lines.append(f"  {name:<4} {statistics.median(its):8.1f} it/s "
                     f"[{min(its):.1f}-{max(its):.1f}]  first fit {r['first_s'][name]:6.1f} s"
                     f"  CPU {1e3 * statistics.median(r['cpu_per_step'][name]):.2f} ms/it"
                     f"  last loss {r['loss'][name]:.6g}")
    ratios = r["speed_ratios"]
    lines.append(f"  {new}/{old} speed (per round, it/s ratio): median "
                 f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]; "
                 f"{new}/{old} CPU time per step: median "
                 f"{statistics.median(r['cpu_ratios']):.3f} "
                 f"[{min(r['cpu_ratios']):.3f}-{max(r['cpu_ratios']):.3f}]; "
                 f"largest weight difference after the same steps {r['weight_gap']:.3g}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", nargs="?", help="source tree of the old code")
    parser.add_argument("new", nargs="?", help="source tree of the new code")
    parser.add_argument("--workloads", default="sinusoid-1,sinusoid-5",
                        help="comma list of benchmarks/meta_step.py workloads")
    parser.add_argument("--order", choices=("second", "first"), default="second")
    parser.add_argument("--steps", type=int, default=200, help="meta-steps per fit call (N)")
    parser.add_argument("--rounds", type=int, default=7, help="timed fits per tree")
    parser.add_argument("--steps-per-execution", type=int, default=50, dest="spe")
    parser.add_argument("--json", help="write the results to this path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker(args.worker, json.loads(args.config))
        return
    if not (args.old and args.new):
        parser.error("Expected two source trees. Received: old=%r, new=%r" % (args.old, args.new))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from meta_step import WORKLOADS

    names = ("old", "new")
    print(f"old: {args.old}\nnew: {args.new}\n{os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for index, workload in enumerate(args.workloads.split(",")):
        if workload not in WORKLOADS:
            parser.error(f"Expected a workload in {', '.join(WORKLOADS)}. "
                         f"Received: workload={workload!r}")
        cfg = dict(WORKLOADS[workload], workload=workload, order=args.order, spe=args.spe,
                   rounds=args.rounds)
        # Whole executions only: N is rounded up to a multiple of steps_per_execution.
        cfg["steps"] = -(-args.steps // args.spe) * args.spe
        results.append(compare((args.old, args.new), names, cfg, swap=index % 2 == 1))
        print(_summary(results[-1], names), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
