"""RL² vs MAML-RL on 2D navigation (and Meta-World ML1 reach) through keras_meta.evaluation.

Both learners train for the same number of meta-iterations on the same task family, then
the harness measures, over several seeds of held-out tasks, the return after each
adaptation budget (MAML-RL: policy-gradient steps on `--episodes` episodes; RL²: the k-th
episode of a trial), the meta-train/meta-test gap and the compute cost. Meta-World ML1
reach additionally reports the Meta-World protocol (success rate and return after k
adaptation episodes on the benchmark's held-out test tasks).

    python benchmarks/rl2.py --quick                  # a few iterations, small evaluation
    python benchmarks/rl2.py --iterations 200         # longer navigation run
    python benchmarks/rl2.py --ml1 --iterations 20    # also ML1 reach-v3 (needs metaworld)
"""

import argparse
import time

import keras

from keras_meta import evaluation
from keras_meta.rl import (MAMLRL, RL2, GaussianPolicy, MetaWorldML1, Navigation2D, meta_evaluate_episodes,
                           metaworld_available)


def _maml_rl(env, horizon, seed):
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    body = keras.Sequential([keras.Input((obs_dim,)), keras.layers.Dense(100, activation="relu"),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(act_dim)])
    return MAMLRL(GaussianPolicy(body, act_dim), env, inner_lr=0.1, horizon=horizon, seed=seed)


def _rl2(env, horizon, episodes_per_trial, seed):
    return RL2(None, env, episodes_per_trial=episodes_per_trial, units=64, horizon=horizon, gamma=0.99,
               gae_lambda=0.95, ppo_epochs=4, minibatches=2, optimizer=keras.optimizers.Adam(1e-3), seed=seed)


def _fmt(row):
    return f"{row['mean']:9.2f} ± {row['ci95']:6.2f}"


def _run(name, env, eval_env, args, horizon):
    keras.utils.set_random_seed(args.seed)
    learners = {"MAML-RL (TRPO)": _maml_rl(env, horizon, args.seed),
                "RL2 (GRU-64, PPO)": _rl2(env, horizon, args.episodes_per_trial, args.seed)}
    seeds = list(range(args.seeds))
    print(f"\n=== {name}: horizon {horizon}, {args.iterations} meta-iterations x {args.meta_batch_size} tasks, "
          f"evaluation on {args.eval_tasks} held-out tasks x {len(seeds)} seeds ===")
    summary = []
    for label, learner in learners.items():
        start = time.perf_counter()
        if isinstance(learner, MAMLRL):
            learner.fit(epochs=1, steps_per_epoch=args.iterations, meta_batch_size=args.meta_batch_size,
                        episodes_per_task=args.episodes, verbose=0)
            budgets = [0, 1, 2]
        else:
            learner.fit(epochs=1, steps_per_epoch=args.iterations, meta_batch_size=args.meta_batch_size,
                        trials_per_task=args.trials_per_task, verbose=0)
            budgets = list(range(args.episodes_per_trial))
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        report = evaluation.evaluate(learner, eval_env, budgets=budgets, seeds=seeds, num_tasks=args.eval_tasks,
                                     episodes=args.episodes, compute_steps=1,
                                     report_dir=f"{args.report_dir}/{name}/{label.split()[0]}")
        eval_s = time.perf_counter() - start
        speed = {r["x"]: r for r in report.section("learning_speed")}
        gen = {r["x"]: r for r in report.section("generalization")}
        compute = {r["x"]: r["mean"] for r in report.section("compute")}
        print(f"\n{label}: trained {args.iterations} iterations in {train_s:.1f} s, evaluated in {eval_s:.1f} s")
        print(f"  return after k {report.meta['budget_name']} (mean ± 95% CI over seeds):")
        for k, row in speed.items():
            print(f"    k={k}: {_fmt(row)}")
        print(f"  generalization gap (train - test): {_fmt(gen['gap (train - test)'])}")
        print(f"  meta-steps/s {compute['meta_steps_per_second']:.3f}, adaptation latency "
              f"{compute['adaptation_latency_ms']:.0f} ms, peak RSS {compute['peak_rss_mb']:.0f} MB")
        summary.append((label, train_s, speed[budgets[0]], speed[budgets[-1]]))
        if args.protocol:
            result = meta_evaluate_episodes(learner, eval_env, eval_env.sample_tasks(args.protocol_tasks, seed=99),
                                            adaptation_episodes=args.protocol_episodes, eval_episodes=1, seed=0)
            print("  Meta-World protocol: " + ", ".join(
                f"k={k}: success {v['success_rate']:.2f}, return {v['return']:.1f}" for k, v in result.items()))
    print(f"\n{name} summary (return before -> after adaptation):")
    for label, train_s, first, last in summary:
        print(f"  {label:<20} {first['mean']:9.2f} -> {last['mean']:9.2f}   ({train_s:.0f} s training)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--meta-batch-size", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None, help="MAML-RL episodes per task and phase")
    parser.add_argument("--episodes-per-trial", type=int, default=2)
    parser.add_argument("--trials-per-task", type=int, default=None)
    parser.add_argument("--eval-tasks", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--ml1", action="store_true", help="also run Meta-World ML1 reach-v3")
    parser.add_argument("--ml1-horizon", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-dir", default="runs/rl2_benchmark")
    args = parser.parse_args()
    args.iterations = args.iterations or (5 if args.quick else 100)
    args.meta_batch_size = args.meta_batch_size or (10 if args.quick else 20)
    args.episodes = args.episodes or (10 if args.quick else 20)
    args.trials_per_task = args.trials_per_task or (2 if args.quick else 4)
    args.eval_tasks = args.eval_tasks or (10 if args.quick else 40)
    args.protocol = False
    _run("navigation", Navigation2D(horizon=args.horizon), Navigation2D(horizon=args.horizon), args, args.horizon)
    if args.ml1:
        ok, reason = metaworld_available()
        if not ok:
            print(f"\nSkipping Meta-World ML1 reach: {reason}")
            return
        args.protocol, args.protocol_tasks, args.protocol_episodes = True, min(args.eval_tasks, 5), (0, 1)
        train = MetaWorldML1("reach-v3", split="train", horizon=args.ml1_horizon)
        test = MetaWorldML1("reach-v3", split="test", horizon=args.ml1_horizon)
        _run("ml1-reach", train, test, args, args.ml1_horizon)


if __name__ == "__main__":
    main()
