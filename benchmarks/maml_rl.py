"""MAML-RL reproduction: 2D navigation (Finn et al., 2017, fig. 4 / table) and HalfCheetah.

Paper, 2D navigation, mean return after 0/1/2/3 policy-gradient steps: -40.4 / -11.7 / -3.3 / -3.2.
Protocol: policy MLP 100-100 ReLU, 20 tasks x 20 episodes per meta-iteration, horizon 100,
alpha = 0.1, TRPO outer step (max KL 0.01), policy actions in [-1, 1] rescaled onto the
env's +-0.1 bounds (rllab's `normalize`, as in the paper's code); evaluation on held-out
goals with alpha for every step, and with the paper's alpha then alpha / 2.

    python benchmarks/maml_rl.py --quick                # a few iterations, small evaluation
    python benchmarks/maml_rl.py                        # full navigation run
    python benchmarks/maml_rl.py --env halfcheetah-dir --iterations 20
    python benchmarks/maml_rl.py --env halfcheetah-dir --horizon 100 --iterations 100 --meta-batch-size 10 \
        --episodes 10 --eval-tasks 20   # the RESULTS.md run
"""

import argparse
import time

import keras
import numpy as np

from keras_meta.rl import MAMLRL, GaussianPolicy, HalfCheetahDir, HalfCheetahVel, Navigation2D

ENVS = {"navigation": Navigation2D, "halfcheetah-dir": HalfCheetahDir, "halfcheetah-vel": HalfCheetahVel}


def evaluate_both(learner, tasks, episodes, alpha):
    """Returns after 0..3 steps at step size alpha throughout, and with the paper's alpha, alpha / 2, alpha / 2."""
    return [learner.meta_evaluate(tasks, steps=[0, 1, 2, 3], episodes=episodes, seed=1, inner_lrs=lrs)
            for lrs in ([alpha] * 3, [alpha, alpha / 2, alpha / 2])]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="navigation", choices=sorted(ENVS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--meta-batch-size", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--eval-tasks", type=int, default=None)
    parser.add_argument("--horizon", type=int, default=None, help="episode length (default: the env's)")
    parser.add_argument("--outer", default="trpo", choices=["trpo", "ppo"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also evaluate on the held-out tasks every this many iterations (0: only at the end)")
    parser.add_argument("--select-best", action="store_true",
                        help="evaluate the policy of the meta-iteration with the best post-update training return "
                             "(the MAML paper's protocol, appendix A.2), not the last one")
    parser.add_argument("--save", default=None, help="write the meta-trained policy to this .keras file")
    parser.add_argument("--env-action-units", action="store_true",
                        help="policy acts in env units, clipped to the bounds (default: rescaled from [-1, 1], "
                             "rllab's normalize as in the paper's code)")
    args = parser.parse_args()
    navigation = args.env == "navigation"
    iterations = args.iterations or (10 if args.quick else (200 if navigation else 300))
    meta_batch = args.meta_batch_size or (20 if navigation else (10 if args.quick else 40))
    episodes = args.episodes or (20 if navigation else (10 if args.quick else 20))
    eval_tasks = args.eval_tasks or (10 if args.quick else 40)
    keras.utils.set_random_seed(args.seed)  # the policy's initial weights
    env = ENVS[args.env]() if args.horizon is None else ENVS[args.env](horizon=args.horizon)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    body = keras.Sequential([keras.Input((obs_dim,)), keras.layers.Dense(100, activation="relu"),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(act_dim)])
    learner = MAMLRL(GaussianPolicy(body, act_dim), env, inner_lr=args.inner_lr, outer=args.outer, seed=args.seed,
                     rescale_actions=not args.env_action_units)
    print(f"env={args.env} horizon={env.horizon} iterations={iterations} meta_batch={meta_batch} "
          f"episodes={episodes} outer={args.outer} inner_lr={args.inner_lr} rescale_actions={learner.rescale_actions}")
    tasks = env.sample_tasks(eval_tasks, seed=10_000 + args.seed)
    train_time = 0.0
    best_return, best_iteration, best_weights = -np.inf, None, None
    for it in range(iterations):
        t0 = time.perf_counter()
        # The iteration's returns are those of the policy it started from, before its outer step.
        weights_before = learner.policy.get_weights() if args.select_best else None
        logs = learner.fit(epochs=1, meta_batch_size=meta_batch, episodes_per_task=episodes, verbose=0).history
        train_time += time.perf_counter() - t0
        print(f"iter {it + 1:4d}  pre {logs['pre_return'][0]:9.2f}  post {logs['post_return'][0]:9.2f}  "
              f"kl {logs['kl'][0]:.4f}  {time.perf_counter() - t0:6.1f}s", flush=True)
        if args.select_best and logs["post_return"][0] > best_return:
            best_return, best_iteration, best_weights = logs["post_return"][0], it + 1, weights_before
        if args.eval_every and (it + 1) % args.eval_every == 0 and it + 1 < iterations:
            for label, interim in zip(("alpha", "alpha then alpha/2"),
                                      evaluate_both(learner, tasks, episodes, args.inner_lr)):
                print(f"eval after {it + 1} iterations, step sizes {label}: "
                      + " / ".join(f"{v:.2f}" for v in interim.values()), flush=True)
    if args.select_best:
        learner.policy.set_weights(best_weights)
        print(f"evaluating the policy iteration {best_iteration} started from "
              f"(post-update training return {best_return:.2f})")
    if args.save:
        learner.policy.save(args.save)
    t0 = time.perf_counter()
    alpha = args.inner_lr
    results, halved = evaluate_both(learner, tasks, episodes, alpha)
    print(f"train wall time {train_time:.1f}s ({iterations} meta-iterations), eval {time.perf_counter() - t0:.1f}s")
    print("steps                      " + "  ".join(f"{k:>8d}" for k in results))
    print(f"return, alpha {alpha:<12g} " + "  ".join(f"{v:8.2f}" for v in results.values()))
    print("return, alpha then alpha/2  " + "  ".join(f"{v:8.2f}" for v in halved.values()))
    if navigation:
        print("paper (alpha then alpha/2)  " + "  ".join(f"{v:8.1f}" for v in (-40.4, -11.7, -3.3, -3.2)))
    print(f"post-adaptation gain (3 steps - 0 steps): {results[3] - results[0]:.2f} / {halved[3] - halved[0]:.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
