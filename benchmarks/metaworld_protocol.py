"""MAML-RL and RL² on Meta-World ML1/ML10, evaluated by Meta-World's own protocol.

Meta-trains each learner on the benchmark's train tasks (`MetaWorldML1`/`MetaWorldML10`,
keras_meta's collection), then hands it to `metaworld.evaluation.metalearning_evaluation`
through `keras_meta.rl.MetaWorldAgent` on Meta-World's own test-split vector env
(`metaworld_eval_envs`, one env with the recurrent info in the observation for both
learners; MAML-RL reads only the first 39 features). Prints success rate, mean return,
per-skill success and the wall times of building the benchmarks, training and evaluating.

    python benchmarks/metaworld_protocol.py --benchmark ML10 --horizon 100 --iterations 2
    python benchmarks/metaworld_protocol.py --benchmark reach-v3 --horizon 150 --iterations 20
"""

import argparse
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
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    start = time.perf_counter()
    if args.benchmark == "ML10":
        env = MetaWorldML10("train", horizon=args.horizon, seed=args.seed)
    else:
        env = MetaWorldML1(args.benchmark, "train", horizon=args.horizon, seed=args.seed)
    eval_envs = metaworld_eval_envs(args.benchmark, args.eval_envs, args.horizon, args.seed, recurrent=True)
    print(f"{args.benchmark}: train tasks and test envs built in {time.perf_counter() - start:.0f} s", flush=True)

    print(f"horizon {args.horizon}, {args.iterations} iterations x meta-batch {args.meta_batch_size}, "
          f"{args.episodes} episodes; evaluation: {args.eval_envs} test envs, {args.num_evals} round(s), "
          f"{args.adaptation_episodes} adaptation + {args.evaluation_episodes} evaluated episodes")
    print("| learner | train (s) | evaluate (s) | success rate | mean return | success per skill |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for name, (learner, fit_kwargs) in _learners(env, args).items():
        start = time.perf_counter()
        learner.fit(epochs=1, steps_per_epoch=args.iterations, meta_batch_size=args.meta_batch_size, verbose=0,
                    **fit_kwargs)
        train = time.perf_counter() - start
        start = time.perf_counter()
        success, mean_return, per_task = metalearning_evaluation(
            MetaWorldAgent(learner, seed=args.seed), eval_envs, num_evals=args.num_evals,
            adaptation_episodes=args.adaptation_episodes, evaluation_episodes=args.evaluation_episodes)
        skills = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_task.items()))
        print(f"| {name} | {train:.0f} | {time.perf_counter() - start:.0f} | {success:.3f} | {mean_return:.1f} "
              f"| {skills} |", flush=True)


if __name__ == "__main__":
    main()
