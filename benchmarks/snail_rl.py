"""SNAIL vs RL²'s GRU as meta-RL policies on Bernoulli bandits (Mishra et al., 2018, sec. 4.3).

Both policies are trained by the same `keras_meta.rl.RL2` (PPO over trials of `--pulls`
pulls of one k-armed bandit, arm probabilities ~ U[0, 1]), built by `benchmarks/rl2.py`'s
`_rl2` with `--policy gru` / `--policy snail`, for the same iterations and meta-batch, then
evaluated on the same held-out bandits: cumulative reward of one trial (sampled actions),
mean ± 95% CI (Student-t) over the held-out bandits for each training seed, and over the
training seeds' means. UCB1 and Thompson sampling (Beta(1, 1) prior), computed with NumPy
on the same held-out bandits, plus the expected reward of random pulls and of always
pulling the best arm, are the reference points.

    python benchmarks/snail_rl.py --quick
    python benchmarks/snail_rl.py --arms 5 --pulls 10 --iterations 300 --train-seeds 0 1 2   # RESULTS.md
    # one policy and seed per process, then the combined table:
    python benchmarks/snail_rl.py --policies snail --train-seeds 1 --json runs/snail_1.json
    python benchmarks/snail_rl.py --combine runs/gru.json runs/snail_1.json
"""

import argparse
import json
import time

import keras
import numpy as np

from keras_meta.evaluation import confidence_interval
from keras_meta.rl import BernoulliBandit
from rl2 import _rl2, _rl2_label


def ucb1(probs, pulls, rng):
    """Cumulative reward per bandit of UCB1 (Auer et al., 2002): each arm once, then the
    arm maximising `mean_i + sqrt(2 ln t / n_i)`."""
    tasks, arms = probs.shape
    counts, wins, total = np.zeros((tasks, arms)), np.zeros((tasks, arms)), np.zeros(tasks)
    rows = np.arange(tasks)
    for t in range(pulls):
        if t < arms:
            arm = np.full(tasks, t)
        else:
            arm = np.argmax(wins / counts + np.sqrt(2.0 * np.log(t) / counts), axis=1)
        reward = rng.random(tasks) < probs[rows, arm]
        counts[rows, arm] += 1
        wins[rows, arm] += reward
        total += reward
    return total


def thompson(probs, pulls, rng):
    """Cumulative reward per bandit of Thompson sampling with Beta(1, 1) priors."""
    tasks, arms = probs.shape
    wins, losses, total = np.zeros((tasks, arms)), np.zeros((tasks, arms)), np.zeros(tasks)
    rows = np.arange(tasks)
    for _ in range(pulls):
        arm = np.argmax(rng.beta(1.0 + wins, 1.0 + losses), axis=1)
        reward = rng.random(tasks) < probs[rows, arm]
        wins[rows, arm] += reward
        losses[rows, arm] += 1 - reward
        total += reward
    return total


def trial_rewards(learner, tasks, seed):
    """Cumulative reward of one sampled trial per task, float64 `[len(tasks)]`."""
    d = learner.collect(tasks, trials_per_task=1, seed=seed).data()
    return (np.asarray(d["rewards"], np.float64) * np.asarray(d["masks"])).reshape(len(tasks), -1).sum(1)


def _fmt(values):
    mean, half = confidence_interval(values)
    return f"{mean:7.3f} ± {half:5.3f}"


def run(args):
    env = BernoulliBandit(args.arms)
    held_out = env.sample_tasks(args.eval_tasks, seed=10_000)
    probs = np.stack([t["probs"] for t in held_out])
    rng = np.random.default_rng(0)
    results = {"setting": vars(args).copy(),
               "baselines": {"random (expected)": (probs.mean(1) * args.pulls).tolist(),
                             "best arm (expected)": (probs.max(1) * args.pulls).tolist(),
                             "UCB1": ucb1(probs, args.pulls, rng).tolist(),
                             "Thompson": thompson(probs, args.pulls, rng).tolist()},
               "learners": {}}
    args.episodes_per_trial = args.pulls
    for policy in args.policies:
        args.policy = policy
        for seed in args.train_seeds:
            args.seed = seed
            keras.utils.set_random_seed(seed)
            learner = _rl2(env, 1, args, 1.0, None)
            label = _rl2_label(args)
            start = time.perf_counter()
            for it in range(1, args.iterations + 1):
                logs = learner.fit(epochs=1, steps_per_epoch=1, meta_batch_size=args.meta_batch_size,
                                   trials_per_task=args.trials_per_task, verbose=0).history
                if it == 1 or it % args.log_every == 0:
                    print(f"  {label} seed {seed} iter {it:4d}: trial reward {logs['return'][0]:6.3f}, "
                          f"kl {logs['kl'][0]:.4f}, {time.perf_counter() - start:.0f} s", flush=True)
            train_s = time.perf_counter() - start
            rewards = trial_rewards(learner, held_out, seed=20_000 + seed)
            print(f"{label} seed {seed}: trained {args.iterations} iterations in {train_s:.1f} s, "
                  f"held-out trial reward {_fmt(rewards)}", flush=True)
            results["learners"].setdefault(label, []).append(
                {"seed": seed, "train_s": train_s, "rewards": rewards.tolist()})
            if args.json:
                # After every seed, so an interrupted run keeps its finished seeds.
                with open(args.json, "w") as f:
                    json.dump(results, f)
    return results


def report(results):
    s = results["setting"]
    print(f"\n=== Bernoulli bandits, k={s['arms']} arms, n={s['pulls']} pulls; {s['iterations']} PPO iterations x "
          f"{s['meta_batch_size']} bandits x {s['trials_per_task']} trials; {s['eval_tasks']} held-out bandits ===")
    print("cumulative reward per trial, mean ± 95% CI over the held-out bandits")
    for name, rewards in results["baselines"].items():
        print(f"  {name:<34} {_fmt(rewards)}")
    for label, runs in results["learners"].items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            print(f"  {label + ' seed ' + str(r['seed']):<34} {_fmt(r['rewards'])}   ({r['train_s']:.0f} s training)")
        if len(runs) > 1:
            means = [float(np.mean(r["rewards"])) for r in runs]
            print(f"  {label + ', over seeds':<34} {_fmt(means)}   (95% CI over {len(runs)} training seeds' means)")


def combine(paths):
    """Merges the runs of several `--json` files of one setting (same held-out bandits)."""
    results = None
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        if results is None:
            results = part
            continue
        keys = ("arms", "pulls", "iterations", "meta_batch_size", "trials_per_task", "eval_tasks")
        if any(part["setting"][k] != results["setting"][k] for k in keys):
            raise ValueError(f"Expected runs of one setting. Received: {path} with {part['setting']}")
        for label, runs in part["learners"].items():
            seen = {r["seed"] for r in results["learners"].get(label, [])}
            if seen & {r["seed"] for r in runs}:
                raise ValueError(f"Expected each training seed once. Received: {label} seed(s) "
                                 f"{sorted(seen & {r['seed'] for r in runs})} again in {path}")
            results["learners"].setdefault(label, []).extend(runs)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--meta-batch-size", type=int, default=32)
    parser.add_argument("--trials-per-task", type=int, default=1)
    parser.add_argument("--eval-tasks", type=int, default=1000)
    parser.add_argument("--policies", nargs="+", choices=["gru", "snail"], default=["gru", "snail"])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rl2-lr", type=float, default=1e-3)
    parser.add_argument("--rl2-units", type=int, default=32)
    parser.add_argument("--rl2-hidden", type=int, nargs="*", default=[])
    parser.add_argument("--rl2-ppo-epochs", type=int, default=4)
    parser.add_argument("--rl2-minibatches", type=int, default=2)
    parser.add_argument("--rl2-entropy", type=float, default=0.01)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--json", default=None, help="also write the per-bandit results here")
    parser.add_argument("--combine", nargs="+", default=None, help="print the table of these --json files")
    args = parser.parse_args()
    if args.combine:
        report(combine(args.combine))
        return
    if args.quick:
        args.iterations, args.eval_tasks, args.train_seeds = args.iterations or 3, 100, args.train_seeds[:1]
    args.iterations = args.iterations or 300
    report(run(args))


if __name__ == "__main__":
    main()
