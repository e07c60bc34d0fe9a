"""RL² vs MAML-RL on 2D navigation (and Meta-World ML1 reach) through keras_meta.evaluation.

Both learners train for the same number of meta-iterations on the same task family, then
the harness measures, over several seeds of held-out tasks, the return after each
adaptation budget (MAML-RL: policy-gradient steps on `--episodes` episodes; RL²: the k-th
episode of a trial), the meta-train/meta-test gap and the compute cost. Meta-World ML1
reach additionally reports the Meta-World protocol (success rate and return after k
adaptation episodes on the benchmark's held-out test tasks).

    python benchmarks/rl2.py --quick                  # a few iterations, small evaluation
    python benchmarks/rl2.py --iterations 40 --rl2-iterations 200 --meta-batch-size 10 --episodes 10 \
        --trials-per-task 4 --rl2-minibatches 4 --eval-tasks 10 --seeds 3   # the RESULTS.md run
    python benchmarks/rl2.py --ml1 --skip-navigation --iterations 10   # ML1 reach-v3 only (needs metaworld)
    python benchmarks/rl2.py --skip-maml --policy snail --quick   # RL² with SNAIL's blocks instead of the GRU

`--policy snail` trains the same RL² (PPO over trials) with `SNAILPolicy`, which reads the
whole trial through SNAIL's causal TC and attention blocks at every step (the paper's
meta-RL agent); `benchmarks/snail_rl.py` compares the two on Bernoulli bandits.

RL² is built with an initial action std equal to the action bound, a value-target
`reward_scale` and, for navigation, policy `input_scale=(2, 10, 10, 1)`; without these it
does not learn navigation at this budget (see benchmarks/RESULTS.md).
"""

import argparse
import math
import time

import keras
from gymnasium import spaces

from keras_meta import evaluation
from keras_meta.rl import (MAMLRL, RL2, GaussianPolicy, MetaWorldML1, Navigation2D, RL2Policy, SNAILPolicy,
                           meta_evaluate_episodes, metaworld_available)


def _maml_rl(env, horizon, seed):
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    body = keras.Sequential([keras.Input((obs_dim,)), keras.layers.Dense(100, activation="relu"),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(act_dim)])
    # Actions rescaled from [-1, 1] onto the env's bounds, as in the MAML paper's code.
    return MAMLRL(GaussianPolicy(body, act_dim), env, inner_lr=0.1, rescale_actions=True, horizon=horizon, seed=seed)


def _rl2_policy(env, args, input_scale, trial_steps):
    """The RL² policy `--policy` names: `RL2Policy` (GRU) or `SNAILPolicy` reading `trial_steps` steps."""
    log_std_init = 0.0
    if isinstance(env.action_space, spaces.Box):
        # Initial std = the action bound (0.1 for navigation, 1 for Meta-World): with the
        # default std 1 a navigation action is clipped noise and the mean barely matters.
        log_std_init = math.log(float(max(abs(env.action_space.low).max(), abs(env.action_space.high).max())))
    if args.policy == "snail":
        return SNAILPolicy.for_env(env, max_steps=trial_steps, hidden_units=tuple(args.rl2_hidden),
                                   log_std_init=log_std_init, input_scale=input_scale)
    return RL2Policy.for_env(env, units=args.rl2_units, hidden_units=tuple(args.rl2_hidden),
                             log_std_init=log_std_init, input_scale=input_scale)


def _rl2_label(args):
    core = "SNAIL" if args.policy == "snail" else f"GRU-{args.rl2_units}"
    return f"RL2 ({core}, PPO)"


def _rl2(env, horizon, args, reward_scale, input_scale):
    policy = _rl2_policy(env, args, input_scale, args.episodes_per_trial * horizon)
    return RL2(policy, env, episodes_per_trial=args.episodes_per_trial, horizon=horizon, gamma=0.99,
               gae_lambda=0.95, ppo_epochs=args.rl2_ppo_epochs, minibatches=args.rl2_minibatches,
               entropy_coef=args.rl2_entropy, reward_scale=reward_scale,
               optimizer=keras.optimizers.Adam(args.rl2_lr), seed=args.seed)


def _fmt(row):
    return f"{row['mean']:9.2f} ± {row['ci95']:6.2f}"


def _run(name, env, eval_env, args, horizon, reward_scale, input_scale):
    keras.utils.set_random_seed(args.seed)
    learners = {}
    if not args.skip_maml:
        learners["MAML-RL (TRPO)"] = _maml_rl(env, horizon, args.seed)
    learners[_rl2_label(args)] = _rl2(env, horizon, args, reward_scale, input_scale)
    seeds = list(range(args.seeds))
    print(f"\n=== {name}: horizon {horizon}, {args.iterations} (MAML-RL) / {args.rl2_iterations} (RL2) "
          f"meta-iterations x {args.meta_batch_size} tasks, evaluation on {args.eval_tasks} held-out tasks x "
          f"{len(seeds)} seeds ===")
    print(f"RL2: lr {args.rl2_lr}, PPO epochs {args.rl2_ppo_epochs} x {args.rl2_minibatches} minibatches, "
          f"{args.trials_per_task} trials/task, {args.episodes_per_trial} episodes/trial, reward_scale "
          f"{reward_scale}, input_scale {input_scale}, entropy {args.rl2_entropy}, hidden {args.rl2_hidden}, "
          f"initial std = action bound")
    summary = []
    for label, learner in learners.items():
        start = time.perf_counter()
        if isinstance(learner, MAMLRL):
            learner.fit(epochs=1, steps_per_epoch=args.iterations, meta_batch_size=args.meta_batch_size,
                        episodes_per_task=args.episodes, verbose=0)
            budgets = [0, 1, 2]
        else:
            for it in range(1, args.rl2_iterations + 1):
                logs = learner.fit(epochs=1, steps_per_epoch=1, meta_batch_size=args.meta_batch_size,
                                   trials_per_task=args.trials_per_task, verbose=0).history
                if it == 1 or it % args.log_every == 0:
                    print(f"  RL2 iter {it:4d}: episode returns first {logs['first_episode_return'][0]:8.2f} "
                          f"last {logs['last_episode_return'][0]:8.2f}, kl {logs['kl'][0]:.4f}, "
                          f"{time.perf_counter() - start:.0f} s", flush=True)
            budgets = list(range(args.episodes_per_trial))
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        # MAML-RL: the paper's evaluation step sizes, alpha then alpha / 2.
        inner_lrs = [0.1, 0.05] if isinstance(learner, MAMLRL) else None
        report = evaluation.evaluate(learner, eval_env, budgets=budgets, seeds=seeds, num_tasks=args.eval_tasks,
                                     episodes=args.episodes, inner_lrs=inner_lrs, compute_steps=1,
                                     report_dir=f"{args.report_dir}/{name}/{label.split()[0]}")
        eval_s = time.perf_counter() - start
        speed = {r["x"]: r for r in report.section("learning_speed")}
        gen = {r["x"]: r for r in report.section("generalization")}
        compute = {r["x"]: r["mean"] for r in report.section("compute")}
        iterations = args.iterations if isinstance(learner, MAMLRL) else args.rl2_iterations
        print(f"\n{label}: trained {iterations} iterations in {train_s:.1f} s, evaluated in {eval_s:.1f} s")
        print(f"  return after k {report.meta['budget_name']} (mean ± 95% CI over seeds):")
        for k, row in speed.items():
            print(f"    k={k}: {_fmt(row)}")
        print(f"  generalization gap (train - test): {_fmt(gen['gap (train - test)'])}")
        print(f"  meta-steps/s {compute['meta_steps_per_second']:.3f}, adaptation latency "
              f"{compute['adaptation_latency_ms']:.0f} ms, peak RSS {compute['peak_rss_mb']:.0f} MB")
        summary.append((label, train_s, speed[budgets[0]], speed[budgets[-1]]))
        if not isinstance(learner, MAMLRL):
            det = learner.meta_evaluate(eval_env.sample_tasks(args.eval_tasks, seed=99), seed=0, deterministic=True)
            print("  deterministic (mean action) return per trial episode: "
                  + ", ".join(f"k={k}: {v:.2f}" for k, v in det.items()))
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
    parser.add_argument("--skip-navigation", action="store_true", help="only Meta-World ML1 (with --ml1)")
    parser.add_argument("--skip-maml", action="store_true", help="only RL2")
    parser.add_argument("--rl2-iterations", type=int, default=None,
                        help="RL2 PPO iterations (default: --iterations; 0: untrained)")
    parser.add_argument("--rl2-lr", type=float, default=1e-3)
    parser.add_argument("--rl2-units", type=int, default=64)
    parser.add_argument("--policy", choices=["gru", "snail"], default="gru",
                        help="RL2's policy: the GRU (RL2Policy) or SNAIL's blocks over the trial (SNAILPolicy)")
    parser.add_argument("--rl2-hidden", type=int, nargs="*", default=[])
    parser.add_argument("--rl2-ppo-epochs", type=int, default=4)
    parser.add_argument("--rl2-minibatches", type=int, default=2)
    parser.add_argument("--rl2-entropy", type=float, default=0.01)
    parser.add_argument("--rl2-reward-scale", type=float, default=0.1, help="RL2 value-target scale, navigation")
    parser.add_argument("--ml1-reward-scale", type=float, default=0.01, help="RL2 value-target scale, ML1")
    parser.add_argument("--rl2-input-scale", type=float, nargs=4, default=[2.0, 10.0, 10.0, 1.0],
                        help="RL2 policy input factors (observation, action, reward, done), navigation")
    parser.add_argument("--ml1-input-scale", type=float, nargs=4, default=None, help="the same for ML1")
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()
    args.iterations = args.iterations or (5 if args.quick else 100)
    args.rl2_iterations = args.iterations if args.rl2_iterations is None else args.rl2_iterations
    args.meta_batch_size = args.meta_batch_size or (10 if args.quick else 20)
    args.episodes = args.episodes or (10 if args.quick else 20)
    args.trials_per_task = args.trials_per_task or (2 if args.quick else 4)
    args.eval_tasks = args.eval_tasks or (10 if args.quick else 40)
    args.protocol = False
    if not args.skip_navigation:
        _run("navigation", Navigation2D(horizon=args.horizon), Navigation2D(horizon=args.horizon), args, args.horizon,
             args.rl2_reward_scale, args.rl2_input_scale)
    if args.ml1:
        ok, reason = metaworld_available()
        if not ok:
            print(f"\nSkipping Meta-World ML1 reach: {reason}")
            return
        args.protocol, args.protocol_tasks, args.protocol_episodes = True, min(args.eval_tasks, 5), (0, 1)
        train = MetaWorldML1("reach-v3", split="train", horizon=args.ml1_horizon)
        test = MetaWorldML1("reach-v3", split="test", horizon=args.ml1_horizon)
        _run("ml1-reach", train, test, args, args.ml1_horizon, args.ml1_reward_scale, args.ml1_input_scale)


if __name__ == "__main__":
    main()
