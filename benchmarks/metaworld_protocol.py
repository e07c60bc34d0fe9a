"""MAML-RL and RL² on Meta-World ML1/ML10, evaluated by Meta-World's own protocol.

Meta-trains each learner on the benchmark's train tasks (`MetaWorldML1`/`MetaWorldML10`,
keras_meta's collection), then hands it to `metaworld.evaluation.metalearning_evaluation`
through `keras_meta.rl.MetaWorldAgent` on Meta-World's own test-split vector env
(`metaworld_eval_envs`, one env with the recurrent info in the observation for both
learners; MAML-RL reads only the first 39 features). Prints success rate, mean return,
per-skill success and the wall times of building the benchmarks, training and evaluating.

Meta-World's `evaluation` counts, per round, the first `evaluation_episodes` episodes that
end for each skill, so a run counts `num_evals x evaluation_episodes x skills` episodes; the
success rate comes with that count and its 95% Wilson interval (episodes of one round share
a task and an adapted agent, so the interval is optimistic). With several sub-envs per
skill (ML1) an env that succeeds early restarts and can fill the skill's count before a
failing env's episode truncates; `--eval-envs 1` for ML1 (one sub-env per skill for ML10)
keeps every counted episode a full one. `--iterations 0` evaluates the untrained policies;
`--train-seconds` stops meta-training at the first iteration that ends past that wall time.

    python benchmarks/metaworld_protocol.py --benchmark ML10 --horizon 100 --iterations 2
    python benchmarks/metaworld_protocol.py --benchmark reach-v3 --horizon 150 --iterations 20 --eval-envs 1
"""

import argparse
import math
import time

import keras
from metaworld.evaluation import metalearning_evaluation

from keras_meta.rl import (MAMLRL, RL2, GaussianPolicy, MetaWorldAgent, MetaWorldML1, MetaWorldML10, RL2Policy,
                           metaworld_eval_envs)


def _learners(env, args):
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    body = keras.Sequential([keras.Input((obs_dim,)), keras.layers.Dense(64, activation="tanh"),
                             keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(act_dim)])
    return {
        "MAML-RL (TRPO)": (MAMLRL(GaussianPolicy(body, act_dim), env, inner_lr=0.1, rescale_actions=True,
                                  horizon=args.horizon, seed=args.seed), {"episodes_per_task": args.episodes}),
        "RL2 (GRU-64, PPO)": (RL2(RL2Policy.for_env(env, units=64), env, episodes_per_trial=args.episodes,
                                  horizon=args.horizon, reward_scale=0.01, seed=args.seed), {"trials_per_task": 1}),
    }


def wilson_interval(successes, n, z=1.96):
    """95% Wilson score interval of a proportion."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _train(name, learner, fit_kwargs, args):
    """Meta-trains one iteration per `fit` call (logged) until the iteration or time budget ends."""
    start, done = time.perf_counter(), 0
    while done < args.iterations and (args.train_seconds is None or time.perf_counter() - start < args.train_seconds):
        t0 = time.perf_counter()
        logs = learner.fit(epochs=1, steps_per_epoch=1, meta_batch_size=args.meta_batch_size, verbose=0,
                           **fit_kwargs).history
        done += 1
        print(f"  {name} iter {done:4d}: " + ", ".join(f"{k} {v[0]:.4g}" for k, v in logs.items())
              + f"  {time.perf_counter() - t0:.1f}s", flush=True)
    return done, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--benchmark", default="ML10", help='"ML10" or an ML1 skill such as "reach-v3"')
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=2, help="meta-training iterations per learner")
    parser.add_argument("--meta-batch-size", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task (MAML) / per trial (RL2)")
    parser.add_argument("--eval-envs", type=int, default=5, help="test sub-envs (a multiple of the test skills)")
    parser.add_argument("--num-evals", type=int, default=1)
    parser.add_argument("--adaptation-episodes", type=int, default=5)
    parser.add_argument("--evaluation-episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="stop meta-training at the first iteration that ends past this wall time")
    parser.add_argument("--learners", default="maml,rl2", help="comma-separated subset of maml,rl2")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    start = time.perf_counter()
    if args.benchmark == "ML10":
        env = MetaWorldML10("train", horizon=args.horizon, seed=args.seed)
    else:
        env = MetaWorldML1(args.benchmark, "train", horizon=args.horizon, seed=args.seed)
    print(f"{args.benchmark}: train tasks built in {time.perf_counter() - start:.0f} s", flush=True)

    print(f"horizon {args.horizon}, up to {args.iterations} iterations (train-seconds {args.train_seconds}) x "
          f"meta-batch {args.meta_batch_size}, {args.episodes} episodes; evaluation: {args.eval_envs} test envs, "
          f"{args.num_evals} round(s), {args.adaptation_episodes} adaptation + {args.evaluation_episodes} "
          "evaluated episodes", flush=True)
    rows = []
    wanted = args.learners.split(",")
    for key, (name, (learner, fit_kwargs)) in zip(("maml", "rl2"), _learners(env, args).items()):
        if key not in wanted:
            continue
        iterations, train = _train(name, learner, fit_kwargs, args)
        # Fresh test envs per learner: every learner is evaluated on the same sequence of test tasks.
        eval_envs = metaworld_eval_envs(args.benchmark, args.eval_envs, args.horizon, args.seed, recurrent=True)
        start = time.perf_counter()
        success, mean_return, per_task = metalearning_evaluation(
            MetaWorldAgent(learner, seed=args.seed), eval_envs, num_evals=args.num_evals,
            adaptation_episodes=args.adaptation_episodes, evaluation_episodes=args.evaluation_episodes)
        evaluate = time.perf_counter() - start
        episodes = args.num_evals * args.evaluation_episodes * len(per_task)
        successes = round(success * episodes)
        low, high = wilson_interval(successes, episodes)
        skills = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_task.items()))
        rows.append(f"| {name} | {iterations} | {train:.0f} | {evaluate:.0f} | {successes}/{episodes} = {success:.3f} "
                    f"[{low:.3f}, {high:.3f}] | {mean_return:.1f} | {skills} |")
        print(rows[-1], flush=True)
    print("| learner | iterations | train (s) | evaluate (s) | success (95% Wilson CI) | mean return "
          "| success per skill |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
