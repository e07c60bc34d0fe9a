"""SNAILPolicy acting speed: compiled steps and RL² collection of n-pull bandit trials.

Times, in one process per source tree (e.g. a git worktree of an older commit, with the
built `_core` extension copied into its `keras_meta/`, against another; `.` is the installed
keras_meta), with the paper's bandit policy (`SNAILPolicy.for_env`, `max_steps = pulls`):

- `act`: `RL2.act` (the compiled `policy.step` that `collect` takes) for the `pulls` steps of
  one trial of `--bandits` rows, from the zero state, without the env;
- `collect`: `RL2.collect` of `--bandits` bandits x 1 trial of `pulls` pulls (env included).

Each figure is the median of `--repeats` runs after one warm-up run (tracing).

    python benchmarks/snail_acting.py --trees /tmp/old_worktree .   # an older commit against the installed code
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _worker(tree, args):
    """Times acting and collection with keras_meta from `tree` (`.`: the installed one);
    prints a JSON line."""
    if tree != ".":
        # keras_meta from `tree`, not the editable install's redirecting finder.
        sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]
        sys.path.insert(0, os.path.abspath(tree))
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_meta
    from keras_meta.rl import RL2, BernoulliBandit, SNAILPolicy

    keras.utils.set_random_seed(0)
    env = BernoulliBandit(args.arms)
    policy = SNAILPolicy.for_env(env, max_steps=args.pulls)
    learner = RL2(policy, env, episodes_per_trial=args.pulls, seed=0)
    tasks = env.sample_tasks(args.bandits, seed=0)
    inputs = tf.constant(np.random.default_rng(0).normal(
        size=(args.pulls, args.bandits, policy.input_dim)).astype(np.float32))
    seed = tf.constant([0, 1], tf.int64)

    def act():
        state = policy.get_initial_state(args.bandits)
        for t in range(args.pulls):
            _, state = learner.act(inputs[t], state, seed)
        state.numpy()

    def collect():
        learner.collect(tasks, seed=1)

    result = {"tree": tree, "keras_meta": keras_meta.__file__, "units": policy.units}
    for name, run in (("act", act), ("collect", collect)):
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        result[name] = {"median_s": float(np.median(times[1:])), "runs_s": times[1:]}
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=["."],
                        help="source trees to time, in turn ('.': the installed keras_meta)")
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=100, help="trial length (and max_steps)")
    parser.add_argument("--bandits", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker, args)
    results = []
    for tree in args.trees:
        command = [sys.executable, __file__, "--worker", tree, "--arms", str(args.arms), "--pulls",
                   str(args.pulls), "--bandits", str(args.bandits), "--repeats", str(args.repeats)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"{args.bandits} bandits x {args.pulls} pulls, k = {args.arms}, median of {args.repeats}")
    print(f"{'tree':40s} {'units':>7s} {'act (s)':>9s} {'collect (s)':>12s}  keras_meta")
    for r in results:
        print(f"{r['tree']:40s} {r['units']:7d} {r['act']['median_s']:9.3f} "
              f"{r['collect']['median_s']:12.3f}  {r['keras_meta']}")
    if len(results) == 2:
        ratio = {k: results[0][k]["median_s"] / results[1][k]["median_s"] for k in ("act", "collect")}
        print(f"speed-up (first / second): act {ratio['act']:.1f}x, collect {ratio['collect']:.1f}x")


if __name__ == "__main__":
    main()
