"""MAML-RL's whole meta-iteration as one compiled TensorFlow graph over an in-graph env.

With an environment of `keras_meta.rl.graph_envs` (reset/step made of TF ops over a
`[tasks, envs]` batch), every part of a meta-iteration is a TensorFlow op: task sampling,
collection (stateless sampling noise from the run seed and the iteration), discounted
returns and GAE (`keras_meta.rl.generalized_advantages`, the twin of the C++ buffer's
recursion), the linear baseline, the inner policy-gradient step, post-adaptation collection and the TRPO
(or PPO) outer step. `GraphMetaIteration` compiles them into one `tf.function` placed on
one device, so nothing leaves the device between the steps; the pieces (`collect`,
`process`, `inner_step`, `outer_step`) are plain functions of tensors that an agent's
`train(experience)` can call on its own trajectories.

The algorithm is `MAMLRL`'s: the pieces call its inner loss, adaptation, surrogate,
Fisher-vector product and TRPO step, so the host path and this one share one
implementation and agree on the same trajectories (tested).
"""

import collections

import tensorflow as tf

from keras_meta._validation import check_positive_int
from keras_meta.ops.finite import apply_if_finite
from keras_meta.rl.maml_rl import Batch
from keras_meta.rl.meta_gradient import generalized_advantages

Rollout = collections.namedtuple(
    "Rollout", ["observations", "next_observations", "actions", "rewards", "terminated", "truncated", "masks",
                "steps"])
Rollout.__doc__ = """One episode per `[task, env]` row, tensors `[T, E, H, ...]` laid out as the
C++ `RolloutBuffer.data()` of a collection with one episode per row (masks 1 for the
recorded steps, `steps` the index within the episode)."""


def default_device():
    """The first GPU if TensorFlow sees one, else the CPU."""
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"


def standardize_advantages(advantages, masks):
    """Per-task standardisation over the recorded steps, as `buffer.standardize_advantages(axis=(1, 2))`."""
    n = tf.maximum(tf.reduce_sum(masks, [1, 2], keepdims=True), 1.0)
    mean = tf.reduce_sum(advantages * masks, [1, 2], keepdims=True) / n
    std = tf.sqrt(tf.reduce_sum(tf.square((advantages - mean) * masks), [1, 2], keepdims=True) / n)
    return (advantages - mean) / (std + 1e-8) * masks


def step_seed(run_seed, iteration, phase):
    """The stateless seed of one collection phase of one iteration: a hash of the three.

    Args:
        run_seed: int64 scalar tensor (or int).
        iteration: int64 scalar tensor (or int).
        phase: Python int (0: pre-update collection of inner step k is phase k, the
            post-update collection is phase `inner_steps`).

    Returns:
        An int64 scalar in `[0, 2**31 - 1)`; step `h` of the phase samples with `[seed, h]`,
        as the host path's `_rollout` does with its own seed.
    """
    pair = tf.stack([tf.cast(run_seed, tf.int64), tf.cast(iteration, tf.int64) * 64 + phase])
    return tf.random.stateless_uniform([], pair, 0, 2**31 - 1, dtype=tf.int64)


def collect(learner, env, stacked, tasks, episodes, seed, deterministic=False):
    """One episode per `[task, env]` row of an in-graph env with per-task weights `stacked`.

    Step `h` samples with the stateless seed `[seed, h]` through `learner`'s own action
    function, so given the same tasks, weights and seed the trajectories are those of
    `learner.collect` on the host twin.

    Args:
        learner: A `MAMLRL`.
        env: A `GraphTaskEnv` in NEXT_STEP autoreset mode, horizon `learner.horizon`.
        stacked: Per-task weights, `[T, ...]` each.
        tasks: Float tensor `[T, task_size]`.
        episodes: Episodes per task (a Python int).
        seed: int64 scalar tensor.
        deterministic: Act with the mode instead of sampling.

    Returns:
        A `Rollout`.
    """
    horizon = learner.horizon
    state, obs = env.reset(tasks, episodes, seed=tf.cast(seed, tf.int64))
    seed = tf.cast(seed, tf.int64)
    alive = tf.ones(tf.shape(obs)[:2], tf.bool)
    names = ("observations", "next_observations", "actions", "rewards", "terminated", "truncated", "masks")
    dtypes = (tf.float32, tf.float32, tf.int64 if learner.policy.discrete else tf.float32, tf.float32, tf.bool,
              tf.bool, tf.float32)
    arrays = tuple(tf.TensorArray(d, size=horizon) for d in dtypes)

    def body(h, state, obs, alive, arrays):
        flat_obs = tf.reshape(obs, [obs.shape[0], obs.shape[1], -1])
        actions = learner.act(stacked, flat_obs, tf.stack([seed, tf.cast(h, tf.int64)]), deterministic)
        env_actions = learner.env_actions(actions)
        state, nxt, reward, terminated, truncated = env.step(state, env_actions)
        # A row records its first episode only (one episode per row), as the host path.
        values = (obs, nxt, actions, reward, terminated, truncated & ~terminated, tf.cast(alive, tf.float32))
        arrays = tuple(a.write(h, v) for a, v in zip(arrays, values))
        return h + 1, state, nxt, alive & ~(terminated | truncated), arrays

    _, _, _, _, arrays = tf.while_loop(lambda h, *_: h < horizon, body, (tf.constant(0), state, obs, alive, arrays))
    # [H, T, E, ...] -> [T, E, H, ...]
    out = {}
    for name, array in zip(names, arrays):
        value = array.stack()
        out[name] = tf.transpose(value, [1, 2, 0] + list(range(3, value.shape.rank)))
    masks = out["masks"]
    out["rewards"] *= masks
    out["steps"] = tf.cast(tf.cumsum(masks, axis=2, exclusive=True), tf.int32)
    return Rollout(**out)


def episode_returns(rollout):
    """Mean undiscounted return per task, `[T]` (each row holds one episode)."""
    episodes = tf.reduce_sum(tf.reduce_max(rollout.masks, axis=2), axis=1)
    return tf.reduce_sum(rollout.rewards * rollout.masks, [1, 2]) / tf.maximum(episodes, 1.0)


def process(learner, rollout):
    """Baseline fit, GAE and per-task advantage normalisation of a `Rollout`, as `learner.process`.

    Returns:
        A `Batch`.
    """
    # Discounted returns (no bootstrap, the REINFORCE convention) are GAE with V = 0, lam = 1.
    zeros = tf.zeros_like(rollout.rewards)
    _, returns = generalized_advantages(rollout.rewards, zeros, zeros, rollout.terminated, rollout.truncated,
                                        rollout.masks, learner.gamma, 1.0)
    values, next_values = learner.baseline.fit_predict(rollout.observations, rollout.next_observations,
                                                       rollout.steps, returns, rollout.masks)
    advantages, _ = generalized_advantages(rollout.rewards, values, next_values, rollout.terminated,
                                           rollout.truncated, rollout.masks, learner.gamma, learner.gae_lambda)
    if learner.normalize_advantages:
        advantages = standardize_advantages(advantages, rollout.masks)
    obs = rollout.observations
    return Batch(tf.reshape(obs, tf.concat([tf.shape(obs)[:3], [-1]], 0)), rollout.actions, advantages,
                 rollout.masks, rollout.steps)


def inner_step(learner, theta, batches):
    """Every task's fast weights (stacked `[T, ...]`) after one inner step on each of `batches`.

    Differentiable in `theta` (second order unless the learner is first-order).
    """
    return learner.adapt_tasks(theta, batches)


def outer_step(learner, theta, batches, outer, old_dist=None):
    """The outer step's new meta-weights from the pre-update `batches` and post-update `outer`.

    TRPO: `learner.trpo_update`; PPO: `learner.ppo_epochs` optimizer steps applied to the
    policy's variables (then returned). `old_dist` defaults to the sampling policy's
    distribution, the fast weights' on `outer`.

    Returns:
        `(new_theta, accepted, logs)`; TRPO's `new_theta` is not yet assigned.
    """
    if old_dist is None:
        old_dist = learner.dist_params(tf.stop_gradient(inner_step(learner, theta, batches)), outer.observations)
    if learner.outer == "trpo":
        return learner.trpo_update(theta, batches, outer, old_dist)
    for _ in range(learner.ppo_epochs):
        loss, kl = learner.ppo_update(batches, outer, old_dist)
    return learner.policy.weights_list(), tf.constant(True), {"loss": loss, "kl": kl}


class GraphMetaIteration:
    """`MAMLRL` meta-iterations over an in-graph env, each one compiled `tf.function` call.

    A call samples the iteration's tasks with `env.sample_tasks` from (run seed,
    iteration), collects `episodes_per_task` episodes per task with the meta-weights for
    each inner step and adapts, collects again with the fast weights, takes the outer step,
    assigns the new weights (a non-finite candidate is skipped, as on the host path) and
    advances `learner.training_state.iteration`, all inside the graph on `device`.

    Args:
        learner: A `MAMLRL` (its policy, settings and training state are used).
        env: A `GraphTaskEnv` with `horizon == learner.horizon` and NEXT_STEP autoreset.
        meta_batch_size: Tasks per iteration.
        episodes_per_task: Episodes per task and phase.
        device: Device the graph is placed on (default: `default_device()`).

    Raises:
        ValueError: For non-positive sizes, or an env whose horizon or spaces differ from the learner's.

    Example:

    >>> iteration = GraphMetaIteration(learner, GraphNavigation2D(), 20, 20)  # doctest: +SKIP
    >>> logs = iteration()  # doctest: +SKIP
    """

    def __init__(self, learner, env, meta_batch_size=20, episodes_per_task=20, device=None):
        self.meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        self.episodes_per_task = check_positive_int(episodes_per_task, "episodes_per_task")
        if getattr(env, "horizon", None) != learner.horizon or env.autoreset_mode.name != "NEXT_STEP":
            raise ValueError(f"Expected a NEXT_STEP graph env with horizon {learner.horizon} (the learner's). "
                             f"Received: env with horizon={getattr(env, 'horizon', None)!r}, "
                             f"autoreset_mode={env.autoreset_mode.name}")
        if bool(env.discrete) != bool(learner.policy.discrete):
            raise ValueError(f"Expected an env with {'discrete' if learner.policy.discrete else 'continuous'} actions "
                             f"like the policy. Received: env.discrete={env.discrete}")
        self.learner, self.env = learner, env
        self.device = default_device() if device is None else device
        # Not under XLA: the second-order path does not compile there (XLA's lowering of
        # the task-vectorised forward has no second derivative: XlaDynamicUpdateSlice).
        self.function = tf.function(self._iteration)

    def __call__(self):
        """Runs one meta-iteration; returns a dict of float logs (pre/post return, outer-step logs)."""
        return {k: float(v) for k, v in self.function().items()}

    def _iteration(self):
        learner = self.learner
        with tf.device(self.device):
            iteration = tf.convert_to_tensor(learner.training_state.iteration)
            run_seed = tf.constant(learner.seed % (2**63), tf.int64)
            tasks = self.env.sample_tasks(self.meta_batch_size, step_seed(run_seed, iteration, 63))
            seeds = [step_seed(run_seed, iteration, k) for k in range(learner.inner_steps + 1)]
            logs = meta_iteration(learner, self.env, tasks, seeds, self.episodes_per_task)
            learner.training_state.iteration.assign_add(1)
        return logs


def meta_iteration(learner, env, tasks, seeds, episodes):
    """One meta-iteration on given tasks and collection seeds, the new weights assigned.

    Args:
        learner: A `MAMLRL`.
        env: A `GraphTaskEnv` (NEXT_STEP, the learner's horizon).
        tasks: Float tensor `[T, task_size]`.
        seeds: `inner_steps + 1` int64 scalars: the step seeds of each pre-update
            collection, then of the post-update one (see `collect`).
        episodes: Episodes per task and phase.

    Returns:
        A dict of float32 scalar logs: `pre_return`, `post_return` and the outer step's logs.
    """
    theta = learner.policy.weights_list()
    stacked = learner.stack_weights(theta, tasks.shape[0])
    batches, logs = [], {}
    for k in range(learner.inner_steps):
        rollout = collect(learner, env, stacked, tasks, episodes, seeds[k])
        if k == 0:
            logs["pre_return"] = tf.reduce_mean(episode_returns(rollout))
        batches.append(process(learner, rollout))
        stacked = inner_step(learner, theta, batches)
    rollout = collect(learner, env, stacked, tasks, episodes, seeds[learner.inner_steps])
    logs["post_return" if learner.inner_steps else "pre_return"] = tf.reduce_mean(episode_returns(rollout))
    outer = process(learner, rollout)
    candidate, accepted, step_logs = outer_step(learner, theta, batches, outer,
                                                learner.dist_params(stacked, outer.observations))
    if learner.outer == "trpo":
        def assign():
            for variable, value in zip(learner.policy.trainable_variables, candidate):
                variable.assign(value)

        tf.cond(accepted, lambda: apply_if_finite(assign, step_logs["surrogate_after"], candidate),
                lambda: tf.constant(False))
    logs.update({k: tf.cast(v, tf.float32) for k, v in step_logs.items()})
    return logs
