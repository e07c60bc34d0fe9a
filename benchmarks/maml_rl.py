"""MAML-RL reproduction: 2D navigation (Finn et al., 2017, fig. 4 / table) and HalfCheetah.

Paper, 2D navigation, mean return after 0/1/2/3 policy-gradient steps: -40.4 / -11.7 / -3.3 / -3.2.
Protocol: policy MLP 100-100 ReLU, 20 tasks x 20 episodes per meta-iteration, horizon 100,
alpha = 0.1, TRPO outer step (max KL 0.01), policy actions in [-1, 1] rescaled onto the
env's +-0.1 bounds (rllab's `normalize`, as in the paper's code); evaluation on held-out
goals with alpha for every step, and with the paper's alpha then alpha / 2.

    python benchmarks/maml_rl.py --quick                # a few iterations, small evaluation
    python benchmarks/maml_rl.py                        # full navigation run
    python benchmarks/maml_rl.py --graph --fvp-subsample 5 --select-best --iterations 100 --seed 0 1 2
        # the RESULTS.md 3-seed table: per-goal 95% CIs per seed, a t-interval over the seeds
    python benchmarks/maml_rl.py --env halfcheetah-dir --iterations 20
    python benchmarks/maml_rl.py --env halfcheetah-dir --horizon 100 --iterations 100 --meta-batch-size 10 \
        --episodes 10 --eval-tasks 20   # the RESULTS.md run

Each trained policy is evaluated on its held-out goals (the last iteration's and, with
`--select-best`, the one selected); figures are means over goals with 95% Student-t
intervals over the goals, and with several seeds a t-interval over the seed means.
`--graph` trains with `GraphMetaIteration` on `GraphNavigation2D` (evaluation steps the
host env); `--fvp-subsample k` computes TRPO's Fisher-vector products on every k-th step,
an approximation of exact TRPO (the line search still checks the KL on all samples).

Speed of one navigation meta-iteration of the paper's size (20 tasks x 20 episodes x 100
steps, TRPO, 100-100 policy), each path in its own process, one after the other, medians
of the timed iterations after an untimed first one (tracing):

    git worktree add --detach /tmp/h2_old <commit before the change>
    cp build/cp311-cp311-linux_x86_64/_core*.so /tmp/h2_old/keras_meta/
    python benchmarks/maml_rl.py --speed --baseline-tree /tmp/h2_old

Paths: `old` (the baseline tree's host path), `host` (this tree's host path: C++
navigation, vectorised Fisher-vector products, one graph for the CG solve and line
search), `graph` (`GraphMetaIteration` over `GraphNavigation2D`: the whole iteration in one
`tf.function`), and with `--fvp-subsample k` also
`host`/`graph` with the FVPs on every k-th step.

    python benchmarks/maml_rl.py --gpu-check   # benchmarks/gpu_check.sh's RL part

prints the requested devices of the compiled meta-iteration's ops (graph and function
bodies), whether any op lacks a GPU kernel or calls Python, runs one call with TensorFlow's
device-placement log, then times in-graph vs host meta-iterations at the paper's size
(`--meta-batch-size/--episodes/--horizon` shrink it for a dry run).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

# keras_meta is imported where used: the speed worker of the baseline imports it from another tree.
ENVS = {"navigation": "Navigation2D", "halfcheetah-dir": "HalfCheetahDir", "halfcheetah-vel": "HalfCheetahVel"}


def evaluate_per_goal(learner, tasks, episodes, inner_lrs):
    """`learner.meta_evaluate`'s returns after 0..3 steps with the per-goal returns behind them.

    Returns:
        `{steps: float64 [goals]}`, each goal's mean return over its episodes; their means
        are `meta_evaluate`'s figures (checked).
    """
    per_collection = []
    collect = learner.collect

    def recording(*args, **kwargs):
        buffer = collect(*args, **kwargs)
        per_collection.append(buffer.episode_returns())
        return buffer

    # meta_evaluate collects once per step count in order; this instance attribute shadows
    # the method for the call so the per-goal figures are those of the same episodes.
    learner.collect = recording
    try:
        means = learner.meta_evaluate(tasks, steps=[0, 1, 2, 3], episodes=episodes, seed=1, inner_lrs=inner_lrs)
    finally:
        del learner.collect
    per_goal = dict(zip(sorted(means), per_collection))
    for k, mean in means.items():
        if not np.isclose(per_goal[k].mean(), mean, rtol=1e-6, atol=1e-6):
            raise RuntimeError(f"per-goal returns after {k} steps average {per_goal[k].mean()}, not {mean}")
    return per_goal


def evaluate_both(learner, tasks, episodes, alpha):
    """Per-goal returns after 0..3 steps at alpha throughout, and with the paper's alpha, alpha / 2, alpha / 2."""
    return [evaluate_per_goal(learner, tasks, episodes, lrs) for lrs in ([alpha] * 3, [alpha, alpha / 2, alpha / 2])]


def with_ci(values):
    """`mean ± half-width` of a 95% Student-t interval (`keras_meta.evaluation.confidence_interval`)."""
    from keras_meta.evaluation import confidence_interval

    mean, half = confidence_interval(values)
    return f"{mean:.2f} ± {half:.2f}"


def _speed_worker(path, iterations, fvp_subsample, tree):
    """Times `iterations` meta-iterations of one path in this process; prints a JSON line."""
    if tree:
        # keras_meta from `tree`, not the editable install's redirecting finder.
        sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]
        sys.path.insert(0, tree)
    import keras_meta.rl as rl

    keras.utils.set_random_seed(0)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(100, activation="relu"),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(2)])
    options = {} if path == "old" else {"fvp_subsample": fvp_subsample}
    learner = rl.MAMLRL(rl.GaussianPolicy(body, 2), rl.Navigation2D(), rescale_actions=True, seed=0, **options)
    if path.startswith("graph"):
        from keras_meta.rl.graph_iteration import GraphMetaIteration

        step = GraphMetaIteration(learner, rl.GraphNavigation2D(), 20, 20)
    else:
        step = lambda: learner.fit(epochs=1, meta_batch_size=20, episodes_per_task=20, verbose=0)
    times = []
    for _ in range(iterations + 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"path": path, "first": times[0], "times": times[1:], "module": rl.__file__}))


def gpu_check(iterations, tasks=20, episodes=20, horizon=100):
    """benchmarks/gpu_check.sh's RL part: where the ops of the compiled meta-iteration are
    placed, then navigation meta-iterations/s in-graph vs host (default: the paper's size),
    on the default device."""
    import collections

    import tensorflow as tf

    import keras_meta.rl as rl
    from keras_meta.rl.graph_iteration import GraphMetaIteration

    # Only takes effect before TensorFlow's context starts: it logs the setup's eager ops too.
    tf.debugging.set_log_device_placement(True)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "rl"))
    from graph_audit import HOST_CALLBACKS, op_types, without_gpu_kernel

    def learner():
        keras.utils.set_random_seed(0)
        body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(100, activation="relu"),
                                 keras.layers.Dense(100, activation="relu"), keras.layers.Dense(2)])
        return rl.MAMLRL(rl.GaussianPolicy(body, 2), rl.Navigation2D(horizon), rescale_actions=True, seed=0)

    graph_step = GraphMetaIteration(learner(), rl.GraphNavigation2D(horizon), tasks, episodes)
    print(f"GPUs: {tf.config.list_logical_devices('GPU')}; GraphMetaIteration device: {graph_step.device}")
    concrete = graph_step.function.get_concrete_function()
    types = op_types(concrete)
    print(f"op types: {len(types)}; Python callbacks: {sorted(types & HOST_CALLBACKS)}; "
          f"without a GPU kernel: {without_gpu_kernel(types)}")
    # Ops of the top-level graph and of every function body (loop bodies: collection, CG, line search).
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    devices = collections.Counter(n.device or "(inherits its caller's)" for n in nodes)
    print("requested device of each op (graph + function bodies):", dict(devices))
    t0 = time.perf_counter()
    graph_step()  # traces, then runs once with the placement log (stderr)
    tf.debugging.set_log_device_placement(False)
    print(f"first call (trace + compile + run): {time.perf_counter() - t0:.1f}s")
    host = learner()
    host_step = lambda: host.fit(epochs=1, meta_batch_size=tasks, episodes_per_task=episodes, verbose=0)
    for name, step in (("in-graph", graph_step), ("host", host_step)):
        step()  # untimed: the host path traces, the graph re-instantiates without the placement log
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"navigation meta-iteration ({tasks} tasks x {episodes} episodes x {horizon} steps), {name}: "
              f"median {med:.3f}s "
              f"= {1 / med:.2f} meta-iterations/s over {iterations}")


def speed(args):
    """Runs every path's worker in turn and prints a markdown table of medians."""
    paths = [("old", 1)] if args.baseline_tree else []
    paths += [("host", 1), ("graph", 1)]
    if args.fvp_subsample > 1:
        paths += [("host", args.fvp_subsample), ("graph", args.fvp_subsample)]
    if args.paths:
        paths = [p for p in paths if f"{p[0]}:{p[1]}" in args.paths.split(",")]
    rows = []
    for path, k in paths:
        load = os.getloadavg()[0]
        command = [sys.executable, __file__, "--speed-worker", path, "--iterations", str(args.iterations),
                   "--fvp-subsample", str(k)] + (["--baseline-tree", args.baseline_tree] if path == "old" else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{path} k={k}: failed (exit {done.returncode}):\n" + "\n".join(done.stderr.splitlines()[-15:]),
                  flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((path, k, result, load, os.getloadavg()[0]))
        print(f"{path} k={k}: first {result['first']:.1f}s, median {statistics.median(result['times']):.2f}s "
              f"({result['module']})", flush=True)
    base = statistics.median(rows[0][2]["times"])
    print(f"\n| path | fvp_subsample | median s/iteration (range) | vs {rows[0][0]} | first call s "
          "| load avg (1 min) before/after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path, k, result, before, after in rows:
        med = statistics.median(result["times"])
        print(f"| {path} | {k} | {med:.2f} ({min(result['times']):.2f}-{max(result['times']):.2f}) | "
              f"{base / med:.2f}x | {result['first']:.1f} | {before:.1f} / {after:.1f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", action="store_true", help="time one meta-iteration per path (see the docstring)")
    parser.add_argument("--speed-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gpu-check", action="store_true", help="benchmarks/gpu_check.sh's RL part")
    parser.add_argument("--baseline-tree", default=None, help="source tree of the code before the change (--speed)")
    parser.add_argument("--fvp-subsample", type=int, default=1,
                        help="Fisher-vector products on every k-th step (MAMLRL's fvp_subsample) for training; "
                             "with --speed, also time those paths with k")
    parser.add_argument("--graph", action="store_true",
                        help="train navigation with GraphMetaIteration (the whole iteration in one tf.function "
                             "over GraphNavigation2D); evaluation steps the host env")
    parser.add_argument("--paths", default=None,
                        help="comma-separated subset of the --speed paths as path:k, e.g. host:5,graph:5")
    parser.add_argument("--env", default="navigation", choices=sorted(ENVS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--meta-batch-size", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--eval-tasks", type=int, default=None)
    parser.add_argument("--horizon", type=int, default=None, help="episode length (default: the env's)")
    parser.add_argument("--outer", default="trpo", choices=["trpo", "ppo"])
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="training seeds, run one after the other; with several, a table across seeds")
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also evaluate on the held-out tasks every this many iterations (0: only at the end)")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="stop meta-training a seed once its iterations have taken this many seconds "
                             "(the last iteration's policy is then the one evaluated as fixed-iteration)")
    parser.add_argument("--select-best", action="store_true",
                        help="evaluate the policy of the meta-iteration with the best post-update training return "
                             "(the MAML paper's protocol, appendix A.2), not the last one")
    parser.add_argument("--save", default=None, help="write the last iteration's policy to this .keras file")
    parser.add_argument("--env-action-units", action="store_true",
                        help="policy acts in env units, clipped to the bounds (default: rescaled from [-1, 1], "
                             "rllab's normalize as in the paper's code)")
    args = parser.parse_args()
    if args.speed_worker:
        return _speed_worker(args.speed_worker, args.iterations or 5, args.fvp_subsample, args.baseline_tree)
    if args.gpu_check:
        return gpu_check(args.iterations or 3, args.meta_batch_size or 20, args.episodes or 20, args.horizon or 100)
    if args.speed:
        args.iterations = args.iterations or 5
        return speed(args)
    navigation = args.env == "navigation"
    if args.graph and not navigation:
        parser.error(f"--graph trains on the in-graph navigation env only. Received: --env {args.env}")
    summaries = [train_and_evaluate(args, seed) for seed in args.seed]
    if navigation and len(summaries) > 1:
        print_seed_table(summaries)


def train_and_evaluate(args, seed):
    """Meta-trains one seed, evaluates it on its held-out goals and prints the figures.

    Returns:
        `{"policies": {label: (per-goal returns at alpha throughout, with alpha then alpha / 2)}}`
        (labels `"iteration N"` and, with `--select-best`, `"selected"`) with the seed, the
        selected iteration and the iteration times.
    """
    import keras_meta.rl as rl

    navigation = args.env == "navigation"
    iterations = args.iterations or (10 if args.quick else (200 if navigation else 300))
    meta_batch = args.meta_batch_size or (20 if navigation else (10 if args.quick else 40))
    episodes = args.episodes or (20 if navigation else (10 if args.quick else 20))
    eval_tasks = args.eval_tasks or (10 if args.quick else 40)
    keras.utils.set_random_seed(seed)  # the policy's initial weights
    env_class = getattr(rl, ENVS[args.env])
    env = env_class() if args.horizon is None else env_class(horizon=args.horizon)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    body = keras.Sequential([keras.Input((obs_dim,)), keras.layers.Dense(100, activation="relu"),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(act_dim)])
    learner = rl.MAMLRL(rl.GaussianPolicy(body, act_dim), env, inner_lr=args.inner_lr, outer=args.outer, seed=seed,
                        rescale_actions=not args.env_action_units, fvp_subsample=args.fvp_subsample)
    if args.graph:
        from keras_meta.rl.graph_iteration import GraphMetaIteration

        # Training on the in-graph twin of the env; evaluation below steps the host env.
        step = GraphMetaIteration(learner, rl.GraphNavigation2D(env.horizon), meta_batch, episodes)
    else:
        step = lambda: {k: v[0] for k, v in learner.fit(epochs=1, meta_batch_size=meta_batch,
                                                        episodes_per_task=episodes, verbose=0).history.items()}
    print(f"env={args.env} seed={seed} horizon={env.horizon} iterations={iterations} meta_batch={meta_batch} "
          f"episodes={episodes} outer={args.outer} inner_lr={args.inner_lr} fvp_subsample={args.fvp_subsample} "
          f"path={'graph' if args.graph else 'host'} rescale_actions={learner.rescale_actions}", flush=True)
    tasks = env.sample_tasks(eval_tasks, seed=10_000 + seed)
    times, best_return, best_iteration, best_weights = [], -np.inf, None, None
    for it in range(iterations):
        if args.train_seconds is not None and sum(times) >= args.train_seconds:
            print(f"training budget of {args.train_seconds:g}s spent after {it} meta-iterations", flush=True)
            break
        t0 = time.perf_counter()
        # The iteration's returns are those of the policy it started from, before its outer step.
        weights_before = learner.policy.get_weights() if args.select_best else None
        logs = step()
        times.append(time.perf_counter() - t0)
        print(f"iter {it + 1:4d}  pre {logs['pre_return']:9.2f}  post {logs['post_return']:9.2f}  "
              f"kl {logs['kl']:.4f}  {times[-1]:6.1f}s  load {os.getloadavg()[0]:5.2f}", flush=True)
        if args.select_best and logs["post_return"] > best_return:
            best_return, best_iteration, best_weights = logs["post_return"], it + 1, weights_before
        if args.eval_every and (it + 1) % args.eval_every == 0 and it + 1 < iterations:
            for label, interim in zip(("alpha", "alpha then alpha/2"),
                                      evaluate_both(learner, tasks, episodes, args.inner_lr)):
                print(f"eval after {it + 1} iterations, step sizes {label}: "
                      + " / ".join(f"{v.mean():.2f}" for v in interim.values()), flush=True)
    # The first iteration traces (and on the host path the first TRPO step compiles).
    print(f"train wall time {sum(times):.1f}s ({len(times)} meta-iterations; first {times[0]:.1f}s, "
          f"median of the rest {statistics.median(times[1:] or times):.2f}s)", flush=True)
    if args.save:
        learner.policy.save(args.save)
    policies = [(f"iteration {len(times)}", learner.policy.get_weights())]
    if args.select_best:
        policies.append(("selected", best_weights))
    summary = {"seed": seed, "times": times, "best_iteration": best_iteration, "policies": {}}
    for label, weights in policies:
        learner.policy.set_weights(weights)
        t0 = time.perf_counter()
        summary["policies"][label] = fixed, halved = evaluate_both(learner, tasks, episodes, args.inner_lr)
        if label == "selected":
            label = f"selected: iteration {best_iteration} (post-update training return {best_return:.2f})"
        print(f"policy {label}, {len(tasks)} held-out tasks, eval {time.perf_counter() - t0:.1f}s; "
              "mean ± 95% CI over the goals:")
        print("  steps                      " + "  ".join(f"{k:>13d}" for k in fixed))
        print(f"  return, alpha {args.inner_lr:<12g} " + "  ".join(f"{with_ci(v):>13s}" for v in fixed.values()))
        print("  return, alpha then alpha/2  " + "  ".join(f"{with_ci(v):>13s}" for v in halved.values()))
        if navigation:
            print("  paper (alpha then alpha/2)  " + "  ".join(f"{v:13.1f}" for v in (-40.4, -11.7, -3.3, -3.2)))
        print(f"  post-adaptation gain (3 steps - 0 steps): {fixed[3].mean() - fixed[0].mean():.2f} / "
              f"{halved[3].mean() - halved[0].mean():.2f}", flush=True)
    return summary


def print_seed_table(summaries):
    """Markdown rows per seed (mean ± 95% CI over goals) and across seeds (t-interval over seed means)."""
    print("\n| policy | step sizes | seed | after 0 / 1 / 2 / 3 steps (± 95% CI) |")
    print("| --- | --- | --- | --- |")
    for label in summaries[0]["policies"]:
        for protocol, name in ((1, "α, α/2, α/2"), (0, "α")):
            for summary in summaries:
                per_goal = summary["policies"][label][protocol]
                print(f"| {label} | {name} | {summary['seed']} | "
                      + " / ".join(with_ci(v) for v in per_goal.values()) + " |")
            seed_means = [[s["policies"][label][protocol][k].mean() for s in summaries] for k in range(4)]
            print(f"| {label} | {name} | mean of {len(summaries)} seeds | "
                  + " / ".join(with_ci(v) for v in seed_means) + " |")
    print("| paper | α, α/2, α/2 | | −40.4 / −11.7 / −3.3 / −3.2 |")
    print("selected iterations: " + ", ".join(f"seed {s['seed']}: {s['best_iteration']}" for s in summaries))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
