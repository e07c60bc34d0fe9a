"""`keras-meta train navigation`: MAML-RL on 2D navigation with a picture of what it learned."""

import json
import pathlib
import time

import numpy as np


def _trajectory(learner, policy, goal, horizon=100):
    from keras_meta.rl.envs import Navigation2D

    env = Navigation2D(horizon=horizon)
    env.set_task({"goal": goal})
    obs, _ = env.reset(seed=0)
    points, total = [obs], 0.0
    for _ in range(horizon):
        action = policy.mode(None, obs[None])[0].numpy()
        obs, reward, terminated, truncated, _ = env.step(learner.env_actions(action))
        points.append(obs)
        total += reward
        if terminated or truncated:
            break
    return np.array(points), total


def train_navigation(iterations, output, seed=0, meta_batch_size=20, episodes=20):
    """Meta-trains MAML-RL (TRPO) on 2D navigation and writes `navigation.png`.

    Args:
        iterations: Meta-iterations.
        output: Output folder (the policy and the figure go there).
        seed: Run seed.
        meta_batch_size: Tasks per meta-iteration (20 in the paper).
        episodes: Episodes per task and phase (20 in the paper).

    Returns:
        The returns after 0..3 adaptation steps on 20 held-out goals.
    """
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_meta.rl import MAMLRL, GaussianPolicy, Navigation2D

    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(100, activation="relu"),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(2)])
    # Actions in [-1, 1] rescaled onto the env's +-0.1 (the paper's code ran under rllab's
    # `normalize`): with env-unit actions the initial std of 1 is ten times the action bound.
    learner = MAMLRL(GaussianPolicy(body, 2), Navigation2D(), inner_lr=0.1, rescale_actions=True, seed=seed)
    step_sizes = [0.1, 0.05, 0.05]  # the paper's evaluation: alpha, then alpha / 2
    print(f"Meta-training MAML-RL (TRPO) on 2D navigation: {iterations} meta-iterations x "
          f"{meta_batch_size} tasks x {episodes} episodes")
    start = time.perf_counter()
    learner.fit(epochs=iterations, meta_batch_size=meta_batch_size, episodes_per_task=episodes)
    seconds = time.perf_counter() - start
    learner.policy.save(out / "policy.keras")

    held_out = Navigation2D().sample_tasks(20, seed=seed + 10_000)
    curve = learner.meta_evaluate(held_out, steps=[0, 1, 2, 3], episodes=episodes, seed=1, inner_lrs=step_sizes)

    goals = [t["goal"] for t in held_out[:4]]
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.4))
    for ax, goal in zip(axes, goals):
        for label, policy in [("meta-policy (0 steps)", learner.policy)] + [
                (f"adapted, {k} step(s)", learner.adapt(task={"goal": goal}, episodes=episodes, steps=k, seed=7,
                                                         inner_lrs=step_sizes)) for k in (1, 3)]:
            path, total = _trajectory(learner, policy, goal)
            ax.plot(path[:, 0], path[:, 1], ".-", markersize=3, label=f"{label}: {total:.1f}")
        ax.plot(*goal, "r*", markersize=14, label="goal")
        ax.plot(0, 0, "ko")
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"goal ({goal[0]:.2f}, {goal[1]:.2f}); return in legend")
    axes[4].plot(list(curve), list(curve.values()), "o-", label="MAML-RL (ours)")
    axes[4].plot([0, 1, 2, 3], [-40.4, -11.7, -3.3, -3.2], "s--", label="MAML paper")
    axes[4].set_xlabel(f"adaptation steps ({episodes} episodes each)")
    axes[4].set_ylabel(f"mean return, {len(held_out)} held-out goals")
    axes[4].legend()
    fig.tight_layout()
    fig.savefig(out / "navigation.png", dpi=100)
    (out / "results.json").write_text(json.dumps(
        {"iterations": iterations, "train_seconds": seconds, "returns": curve}, indent=1))
    print("Mean return after k adaptation steps on held-out goals: "
          + "  ".join(f"k={k}: {v:.1f}" for k, v in curve.items()))
    print(f"Saved {out / 'policy.keras'} and {out / 'navigation.png'}")
    return curve
