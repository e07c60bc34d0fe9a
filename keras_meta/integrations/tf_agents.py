"""TF-Agents bridge: environments, a TFPolicy over Keras 3 policies, drivers, export.

Import this module explicitly (`from keras_meta.integrations import tf_agents as kmtfa`);
`import keras_meta` never imports tf_agents, tensorflow_probability or tf_keras.

TF-Agents 0.19 imports TensorFlow Probability 0.23, which only imports under
`TF_USE_LEGACY_KERAS=1` next to Keras 3. That variable only redirects `tf.keras` (to
tf_keras); `import keras` stays Keras 3 and keras_meta's models stay Keras 3. This module
sets it when it is unset, before TF-Agents is first imported, and refuses an explicit
`TF_USE_LEGACY_KERAS=0`.
"""

import os


def _require_legacy_keras_flag():
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value is None:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        return
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        raise RuntimeError(
            "Expected TF_USE_LEGACY_KERAS to be unset or '1' for the TF-Agents bridge. Received: "
            f"TF_USE_LEGACY_KERAS={value!r}. tf-agents 0.19 imports tensorflow-probability 0.23, which "
            "fails under Keras 3 unless TF_USE_LEGACY_KERAS=1 is set before tf_agents is first imported. "
            "Unset the variable (keras_meta then sets it) or export TF_USE_LEGACY_KERAS=1; it only "
            "redirects tf.keras to tf_keras, `import keras` and keras_meta models stay Keras 3."
        )


_require_legacy_keras_flag()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from gymnasium import spaces  # noqa: E402
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver  # noqa: E402
from tf_agents.environments import py_environment, tf_py_environment  # noqa: E402
from tf_agents.policies import policy_saver, tf_policy  # noqa: E402
from tf_agents.replay_buffers import tf_uniform_replay_buffer  # noqa: E402
from tf_agents.specs import array_spec, tensor_spec  # noqa: E402
from tf_agents.trajectories import policy_step, time_step as ts  # noqa: E402

from keras_meta.rl.buffer import RolloutBuffer  # noqa: E402
from keras_meta.rl.envs import _find_attr, check_task_env  # noqa: E402

__all__ = ["GymnasiumPyEnvironment", "KerasPolicy", "collect_episodes", "collect_steps", "driver_adapt",
           "export_policy", "tf_env"]


def _array_spec(space, name):
    if isinstance(space, spaces.Box):
        return array_spec.BoundedArraySpec(space.shape, np.float32, np.asarray(space.low, np.float32),
                                           np.asarray(space.high, np.float32), name=name)
    if isinstance(space, spaces.Discrete):
        return array_spec.BoundedArraySpec((), np.int64, 0, int(space.n) - 1, name=name)
    raise TypeError(f"Expected a Box or Discrete space. Received: {name} space of type {type(space).__name__}")


class GymnasiumPyEnvironment(py_environment.PyEnvironment):
    """A TF-Agents `PyEnvironment` over a gymnasium task environment.

    gymnasium's 5-tuple maps to time steps as: `terminated` -> `ts.termination` (discount
    0), `truncated` -> `ts.truncation` (discount 1, so value targets bootstrap), otherwise
    `ts.transition`. The step after an episode end resets the env (TF-Agents' auto-reset).

    Args:
        env: A gymnasium env implementing the task interface.
        discount: Discount of ordinary transitions.

    Raises:
        TypeError: If `env` lacks the task interface.
    """

    def __init__(self, env, discount=1.0):
        super().__init__(handle_auto_reset=True)
        self._env = check_task_env(env)
        self._discount = np.float32(discount)
        self._observation_spec = _array_spec(env.observation_space, "observation")
        self._action_spec = _array_spec(env.action_space, "action")
        self._seed = None

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec

    @property
    def gym_env(self):
        return self._env

    def set_task(self, task):
        _find_attr(self._env, "set_task")(task)

    def get_task(self):
        return _find_attr(self._env, "get_task")()

    def sample_tasks(self, n, seed):
        return _find_attr(self._env, "sample_tasks")(n, seed)

    def seed(self, seed):
        self._seed = seed

    def _reset(self):
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None
        return ts.restart(np.asarray(obs, np.float32))

    def _step(self, action):
        obs, reward, terminated, truncated, _ = self._env.step(np.asarray(action))
        obs, reward = np.asarray(obs, np.float32), np.float32(reward)
        if terminated:
            return ts.termination(obs, reward)
        if truncated:
            return ts.truncation(obs, reward, self._discount)
        return ts.transition(obs, reward, self._discount)


def tf_env(env, discount=1.0):
    """`TFPyEnvironment(GymnasiumPyEnvironment(env))`."""
    return tf_py_environment.TFPyEnvironment(GymnasiumPyEnvironment(env, discount))


class KerasPolicy(tf_policy.TFPolicy):
    """A TF-Agents `TFPolicy` over a keras_meta policy (a Keras 3 model).

    Actions are `policy.sample(weights, obs, seed)` with a stateless seed `(seed, counter)`
    whose counter advances on every call, or `policy.mode(weights, obs)` when
    `deterministic`. The weights are the model's own variables: pass an adapted policy
    (`learner.adapt(...)` or `policy.adapted(fast_weights)`) to act at adapted weights.

    Args:
        policy: A `keras_meta.rl.GaussianPolicy` or `CategoricalPolicy`.
        time_step_spec: The TF environment's time step spec.
        action_spec: The TF environment's action spec.
        deterministic: Take the mean / greedy action.
        seed: Seed of the sampling stream.
    """

    def __init__(self, policy, time_step_spec, action_spec, deterministic=False, seed=0):
        super().__init__(time_step_spec, action_spec, clip=False)
        self._keras_policy = policy
        self._deterministic = bool(deterministic)
        self._counter = tf.Variable([int(seed), 0], dtype=tf.int64, trainable=False, name="seed_counter")

    @property
    def keras_policy(self):
        return self._keras_policy

    def _variables(self):
        return list(self._keras_policy.variables) + [self._counter]

    def _action(self, time_step, policy_state, seed):
        del seed  # the stateless stream below makes runs reproducible
        obs = tf.cast(time_step.observation, tf.float32)
        dist = self._keras_policy.dist_params(None, obs)
        if self._deterministic:
            action = self._keras_policy.mode_from_dist(dist)
        else:
            action = self._keras_policy.sample_from_dist(dist, tf.identity(self._counter))
            self._counter.assign_add([0, 1])
        action = tf.cast(action, self.action_spec.dtype)
        return policy_step.PolicyStep(action, policy_state, ())

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError("KerasPolicy samples directly; use action().")


def _replay_buffer(policy, env, capacity):
    return tf_uniform_replay_buffer.TFUniformReplayBuffer(
        data_spec=policy.trajectory_spec, batch_size=env.batch_size, max_length=capacity)


def collect_episodes(env, policy, num_episodes, capacity=100_000):
    """Collects `num_episodes` episodes with a `DynamicEpisodeDriver` into a `TFUniformReplayBuffer`.

    Args:
        env: A `TFPyEnvironment`.
        policy: A TF-Agents policy (e.g. `KerasPolicy`).
        num_episodes: Episodes to collect.
        capacity: Replay buffer length per batch entry.

    Returns:
        The replay buffer.
    """
    buffer = _replay_buffer(policy, env, capacity)
    dynamic_episode_driver.DynamicEpisodeDriver(env, policy, observers=[buffer.add_batch],
                                                num_episodes=num_episodes).run()
    return buffer


def collect_steps(env, policy, num_steps, capacity=100_000):
    """Collects `num_steps` steps with a `DynamicStepDriver` into a `TFUniformReplayBuffer`."""
    buffer = _replay_buffer(policy, env, capacity)
    dynamic_step_driver.DynamicStepDriver(env, policy, observers=[buffer.add_batch], num_steps=num_steps).run()
    return buffer


def _episodes(buffer):
    """Splits a replay buffer's single stream into episodes of (obs, action, reward, term, trunc, next_obs)."""
    traj = buffer.gather_all()
    obs, act = traj.observation.numpy()[0], traj.action.numpy()[0]
    reward, discount = traj.reward.numpy()[0], traj.discount.numpy()[0]
    boundary = traj.is_boundary().numpy()[0]
    last = traj.is_last().numpy()[0]
    episodes, current = [], []
    for t in range(len(obs)):
        if boundary[t]:
            continue
        nxt = obs[t + 1] if t + 1 < len(obs) else obs[t]
        current.append((obs[t], act[t], reward[t], bool(last[t] and discount[t] == 0),
                        bool(last[t] and discount[t] != 0), nxt))
        if last[t]:
            episodes.append(current)
            current = []
    return episodes


def driver_adapt(learner, env, task, episodes=20, steps=1, seed=0):
    """MAML-RL adaptation whose inner-loop data is collected by TF-Agents drivers.

    Each inner step collects `episodes` episodes with a `KerasPolicy` at the current fast
    weights through a `DynamicEpisodeDriver` and a `TFUniformReplayBuffer` observer,
    converts them into a `keras_meta.rl.RolloutBuffer`, and applies the learner's inner
    update (`learner.process` then the policy-gradient step).

    Args:
        learner: A `keras_meta.rl.MAMLRL`.
        env: A `TFPyEnvironment` over a `GymnasiumPyEnvironment`.
        task: The task to adapt to.
        episodes: Episodes per inner step.
        steps: Inner steps.
        seed: Sampling seed.

    Returns:
        The adapted policy (a Keras model).
    """
    env.pyenv.envs[0].set_task(task)
    theta = learner.policy.weights_list()
    current, batches = learner.policy, []
    for k in range(steps):
        replay = collect_episodes(env, KerasPolicy(current, env.time_step_spec(), env.action_spec(),
                                                   seed=seed * 1000 + k), episodes)
        eps = _episodes(replay)[:episodes]
        horizon = max(len(e) for e in eps)
        rollout = RolloutBuffer(1, episodes, horizon, learner.observation_shape,
                                () if learner.policy.discrete else (learner.policy.action_dim,),
                                discrete=learner.policy.discrete, autoreset_mode="SameStep")
        for h in range(horizon):
            rows = [e[min(h, len(e) - 1)] for e in eps]
            stack = lambda i, dtype: np.ascontiguousarray(np.stack([r[i] for r in rows])[None], dtype)
            valid = np.array([[h < len(e) for e in eps]])
            rollout._core.add(stack(0, np.float32).reshape(1, episodes, -1),
                              stack(1, np.int64 if learner.policy.discrete else np.float32),
                              stack(2, np.float32), stack(3, bool), stack(4, bool),
                              stack(5, np.float32).reshape(1, episodes, -1), valid)
        batches.append(learner.process(rollout))
        stacked = learner._adapt_fn(theta, batches)
        current = learner.policy.adapted([w[0] for w in stacked])
    return current


def export_policy(policy, path, time_step_spec=None, action_spec=None, deterministic=True, seed=0):
    """Saves a (typically adapted) policy with TF-Agents' `PolicySaver`.

    The SavedModel loads with plain `tf.saved_model.load(path)` (no keras_meta needed);
    its `action` signature maps a time step to actions.

    Args:
        policy: A keras_meta policy (Keras model) or a `KerasPolicy`.
        path: Output directory.
        time_step_spec, action_spec: Specs (required unless `policy` is a `KerasPolicy`).
        deterministic: Export the mean/greedy policy.
        seed: Seed of a stochastic export.

    Returns:
        `path`.
    """
    if not isinstance(policy, tf_policy.TFPolicy):
        if time_step_spec is None or action_spec is None:
            raise ValueError("Expected `time_step_spec` and `action_spec` with a Keras policy. Received: None")
        policy = KerasPolicy(policy, time_step_spec, action_spec, deterministic=deterministic, seed=seed)
    policy_saver.PolicySaver(policy, batch_size=None).save(path)
    return path


def specs_for(env):
    """`(time_step_spec, action_spec)` as tensor specs for a gymnasium task env."""
    py_env = GymnasiumPyEnvironment(env)
    return (tensor_spec.from_spec(py_env.time_step_spec()), tensor_spec.from_spec(py_env.action_spec()))
