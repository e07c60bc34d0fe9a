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
from tf_agents.trajectories import policy_step, time_step as ts, trajectory  # noqa: E402

from keras_meta.rl.buffer import RolloutBuffer  # noqa: E402
from keras_meta.rl.envs import _find_attr, _LocatedErrors, check_task_env  # noqa: E402
from keras_meta.rl.rl2 import RL2, RL2Policy  # noqa: E402

__all__ = ["GymnasiumPyEnvironment", "KerasPolicy", "RL2KerasPolicy", "TrialDriver", "collect_episodes",
           "collect_steps", "driver_adapt", "export_policy", "tf_env"]


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
    An exception raised by the env's `step` or `reset` (for instance inside a driver) is
    re-raised as a `RuntimeError` naming the task, the episode and the step.

    Args:
        env: A gymnasium env implementing the task interface.
        discount: Discount of ordinary transitions.

    Raises:
        TypeError: If `env` lacks the task interface.
    """

    def __init__(self, env, discount=1.0):
        super().__init__(handle_auto_reset=True)
        self._gym_env = check_task_env(env)
        self._env = _LocatedErrors(self._gym_env, index=0)
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
        return self._gym_env

    def set_task(self, task):
        _find_attr(self._gym_env, "set_task")(task)

    def get_task(self):
        return _find_attr(self._gym_env, "get_task")()

    def sample_tasks(self, n, seed):
        return _find_attr(self._gym_env, "sample_tasks")(n, seed)

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


class _KerasBackedPolicy(tf_policy.TFPolicy):
    """What both policies share: the Keras policy, its variables and the sampling stream.

    Sampled actions use a stateless seed `(seed, counter)` whose counter advances on every
    call, so runs are reproducible whatever TF-Agents passes as `seed`.
    """

    def __init__(self, policy, time_step_spec, action_spec, deterministic, seed, **kwargs):
        super().__init__(time_step_spec, action_spec, clip=False, **kwargs)
        self._keras_policy = policy
        self._deterministic = bool(deterministic)
        self._counter = tf.Variable([int(seed), 0], dtype=tf.int64, trainable=False, name="seed_counter")

    @property
    def keras_policy(self):
        return self._keras_policy

    def _variables(self):
        return list(self._keras_policy.variables) + [self._counter]

    def _choose(self, dist, sample, mode):
        """`mode(dist)` when deterministic, else `sample(dist, seed)` on the next seed."""
        if self._deterministic:
            return mode(dist)
        action = sample(dist, tf.identity(self._counter))
        self._counter.assign_add([0, 1])
        return action

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError(f"{type(self).__name__} samples directly; use action().")


class KerasPolicy(_KerasBackedPolicy):
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
        super().__init__(policy, time_step_spec, action_spec, deterministic, seed)

    def _action(self, time_step, policy_state, seed):
        del seed  # see _KerasBackedPolicy
        net = self._keras_policy
        dist = net.dist_params(None, tf.cast(time_step.observation, tf.float32))
        action = self._choose(dist, net.sample_from_dist, net.mode_from_dist)
        action = tf.cast(action, self.action_spec.dtype)
        return policy_step.PolicyStep(action, policy_state, ())


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

    Raises:
        ValueError: If the learner rescales actions (`rescale_actions=True`): the TF-Agents
            environment receives the policy's actions as they are.
    """
    if getattr(learner, "rescale_actions", False):
        raise ValueError("Expected a learner whose policy acts in the env's units (rescale_actions=False); "
                         "TF-Agents drivers pass the policy's actions to the env unchanged. "
                         "Received: learner with rescale_actions=True")
    env.pyenv.envs[0].set_task(task)
    step_sizes = learner._step_sizes(None, steps)
    stacked, current = learner._tile(learner.policy.weights_list(), 1), learner.policy
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
        stacked = learner._adapt_step_fn(stacked, learner.process(rollout), step_sizes[k])
        current = learner.policy.adapted([w[0] for w in stacked])
    return current


def export_policy(policy, path, time_step_spec=None, action_spec=None, deterministic=True, seed=0):
    """Saves a (typically adapted) policy with TF-Agents' `PolicySaver`.

    The SavedModel loads with plain `tf.saved_model.load(path)` (no keras_meta needed);
    its `action` signature maps a time step to actions. An RL² policy (`RL2Policy`, an
    `RL2` learner or an `RL2KerasPolicy`) is exported as a stateful policy: `action`
    also takes and returns the policy state (inputs `1/hidden`, `1/prev_action`,
    `1/prev_reward`, `1/prev_done`; outputs `state/...`), and `get_initial_state`
    (input `batch_size`) returns the zero state a trial starts from. The caller carries
    the state across episode ends and resets it between trials, like `TrialDriver`.

    Args:
        policy: A keras_meta policy (Keras model), an `RL2` learner, a `KerasPolicy` or
            an `RL2KerasPolicy`.
        path: Output directory.
        time_step_spec, action_spec: Specs (required unless `policy` is a `KerasPolicy`).
        deterministic: Export the mean/greedy policy.
        seed: Seed of a stochastic export.

    Returns:
        `path`.
    """
    if isinstance(policy, RL2):
        policy = policy.policy
    if not isinstance(policy, tf_policy.TFPolicy):
        if time_step_spec is None or action_spec is None:
            raise ValueError("Expected `time_step_spec` and `action_spec` with a Keras policy. Received: None")
        wrapper = RL2KerasPolicy if isinstance(policy, RL2Policy) else KerasPolicy
        policy = wrapper(policy, time_step_spec, action_spec, deterministic=deterministic, seed=seed)
    policy_saver.PolicySaver(policy, batch_size=None).save(path)
    return path


def specs_for(env):
    """`(time_step_spec, action_spec)` as tensor specs for a gymnasium task env."""
    py_env = GymnasiumPyEnvironment(env)
    return (tensor_spec.from_spec(py_env.time_step_spec()), tensor_spec.from_spec(py_env.action_spec()))


class RL2KerasPolicy(_KerasBackedPolicy):
    """A stateful TF-Agents `TFPolicy` over an `RL2Policy` (recurrent, RL²).

    The policy state is a dict `{"hidden": [units], "prev_action": [action_features],
    "prev_reward": [], "prev_done": []}`. `automatic_state_reset` is off: TF-Agents would
    otherwise zero the state at every `FIRST` time step, i.e. at every episode start,
    while RL² keeps it across the episodes of a trial. Reset it between trials with
    `get_initial_state` (as `TrialDriver` does).

    Per time step (TF-Agents carries the reward of the previous transition in the
    current time step), the network input is `x = [obs, prev_action, r, d]` with

    - `MID`: `r = time_step.reward`, `d = 0`;
    - `FIRST`: `r, d` = the stored reward and done flag of the previous episode's end
      (zeros at the start of a trial);
    - `LAST`: the env ignores the action (auto-reset), so the hidden state and previous
      action stay unchanged and only `r = time_step.reward`, `d = 1` are stored.

    This reproduces exactly the inputs `keras_meta.rl.RL2.collect` feeds during training.

    Args:
        policy: An `RL2Policy`.
        time_step_spec, action_spec: The TF environment's specs.
        deterministic: Take the greedy / mean action.
        seed: Seed of the stateless sampling stream.

    Raises:
        TypeError: If `policy` is not an `RL2Policy`.
    """

    def __init__(self, policy, time_step_spec, action_spec, deterministic=False, seed=0):
        if isinstance(policy, RL2):
            policy = policy.policy
        if not isinstance(policy, RL2Policy):
            raise TypeError("Expected `policy` to be a keras_meta.rl.RL2Policy. Received: policy of type "
                            f"{type(policy).__name__}")
        state_spec = {
            "hidden": tf.TensorSpec([policy.units], tf.float32, name="hidden"),
            "prev_action": tf.TensorSpec([policy.action_features], tf.float32, name="prev_action"),
            "prev_reward": tf.TensorSpec([], tf.float32, name="prev_reward"),
            "prev_done": tf.TensorSpec([], tf.float32, name="prev_done"),
        }
        super().__init__(policy, time_step_spec, action_spec, deterministic, seed,
                         policy_state_spec=state_spec, automatic_state_reset=False)

    def _action(self, time_step, policy_state, seed):
        del seed  # see _KerasBackedPolicy
        net = self._keras_policy
        first, last = time_step.is_first(), time_step.is_last()
        reward = tf.reshape(tf.cast(time_step.reward, tf.float32), [-1])
        prev_reward = tf.where(first, policy_state["prev_reward"], reward)
        prev_done = tf.where(first, policy_state["prev_done"], tf.zeros_like(reward))
        x = net.features(time_step.observation, policy_state["prev_action"], prev_reward, prev_done)
        dist, _, hidden = net.step(x, policy_state["hidden"])
        action = self._choose(dist, net.sample, net.mode)
        keep = last[:, None]
        state = {
            "hidden": tf.where(keep, policy_state["hidden"], hidden),
            "prev_action": tf.where(keep, policy_state["prev_action"], net.encode_actions(action)),
            "prev_reward": tf.where(last, reward, tf.zeros_like(reward)),
            "prev_done": tf.cast(last, tf.float32),
        }
        action = tf.reshape(tf.cast(action, self.action_spec.dtype),
                            tf.concat([tf.shape(reward), self.action_spec.shape], 0))
        return policy_step.PolicyStep(action, state, ())


class TrialDriver:
    """A driver that runs RL² trials: policy state kept across episode ends, reset between trials.

    TF-Agents' stock drivers either reset a policy's state at every episode start
    (through `automatic_state_reset`) or never. This driver steps a batch-1
    `TFPyEnvironment` in Python, like `PyDriver`: for each trial it (optionally) sets
    the trial's task, resets the env, starts from `policy.get_initial_state(1)`, and
    feeds the state returned by `policy.action` back in until `episodes_per_trial`
    episodes have ended. Observers receive `Trajectory` batches as with the stock
    drivers (including the boundary transition from a `LAST` to the next `FIRST`).

    Args:
        env: A `TFPyEnvironment` over a `GymnasiumPyEnvironment`, batch size 1.
        policy: A TF-Agents policy (typically `RL2KerasPolicy`).
        episodes_per_trial: Episodes per trial (at least 1).
        num_trials: Trials per `run()`.
        observers: Callables receiving each `Trajectory`.
        tasks: Optional list of tasks; trial `i` runs `tasks[i % len(tasks)]`.

    Raises:
        ValueError: For a trial shorter than one episode or a batched env.

    Example:

    ```python
    env = tf_env(BernoulliBandit(2))
    policy = RL2KerasPolicy(learner.policy, env.time_step_spec(), env.action_spec())
    log = TrialDriver(env, policy, episodes_per_trial=10, num_trials=5,
                      tasks=BernoulliBandit(2).sample_tasks(5, seed=0)).run()
    ```
    """

    def __init__(self, env, policy, episodes_per_trial, num_trials=1, observers=(), tasks=None):
        if isinstance(episodes_per_trial, bool) or not isinstance(episodes_per_trial, (int, np.integer)) \
                or episodes_per_trial < 1:
            raise ValueError(
                "Expected a trial of at least one episode: `episodes_per_trial` a positive integer. "
                f"Received: episodes_per_trial={episodes_per_trial!r}")
        if int(num_trials) != num_trials or num_trials < 1:
            raise ValueError(f"Expected `num_trials` to be a positive integer. Received: num_trials={num_trials!r}")
        if env.batch_size not in (None, 1):
            raise ValueError(f"Expected a TFPyEnvironment of batch size 1. Received: batch_size={env.batch_size}")
        self.env, self.policy = env, policy
        self.episodes_per_trial, self.num_trials = int(episodes_per_trial), int(num_trials)
        self.observers = list(observers)
        self.tasks = None if tasks is None else list(tasks)

    def _set_task(self, task):
        py_env = self.env.pyenv.envs[0]
        py_env.set_task(task)

    def run(self):
        """Runs `num_trials` trials.

        Returns:
            A dict of NumPy arrays with one entry per policy call: `trial`, `episode`
            (within the trial), `step_type`, `reward` (of the time step), `action`, and
            `state` (the flattened policy state the action was computed from).
        """
        log = {k: [] for k in ("trial", "episode", "step_type", "reward", "action", "state")}
        for trial in range(self.num_trials):
            if self.tasks:
                self._set_task(self.tasks[trial % len(self.tasks)])
            time_step = self.env.reset()
            state = self.policy.get_initial_state(self.env.batch_size or 1)
            episodes = 0
            while episodes < self.episodes_per_trial:
                action_step = self.policy.action(time_step, state)
                next_time_step = self.env.step(action_step.action)
                traj = trajectory.from_transition(time_step, action_step, next_time_step)
                for observer in self.observers:
                    observer(traj)
                flat = tf.nest.flatten(state)
                log["trial"].append(trial)
                log["episode"].append(episodes)
                log["step_type"].append(int(time_step.step_type.numpy().reshape(-1)[0]))
                log["reward"].append(float(time_step.reward.numpy().reshape(-1)[0]))
                log["action"].append(np.asarray(action_step.action.numpy()[0]))
                log["state"].append(np.concatenate([np.reshape(s.numpy()[0], [-1]) for s in flat]) if flat
                                    else np.zeros(0, np.float32))
                if bool(next_time_step.is_last().numpy().reshape(-1)[0]):
                    episodes += 1
                time_step, state = next_time_step, action_step.state
        return {k: np.asarray(v) for k, v in log.items()}
