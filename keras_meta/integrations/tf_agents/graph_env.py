"""An in-graph task environment as a TF-Agents `TFEnvironment`."""

import tensorflow as tf
from tf_agents.environments import tf_environment
from tf_agents.trajectories import time_step as ts

from keras_meta._validation import check_positive_int, check_seed
from keras_meta.integrations.tf_agents.env import specs_for
from keras_meta.rl.graph_envs import GraphTaskEnv


class GraphTFEnvironment(tf_environment.TFEnvironment):
    """A `TFEnvironment` over a `keras_meta.rl.GraphTaskEnv`: no Python in reset or step.

    The batch is the graph env's `[tasks, envs]` batch flattened task-major: batch entry
    `t * envs_per_task + e` runs task `t`. The environment's state lives in
    `tf.Variable`s, so `reset`/`step` are TF ops that a driver's `tf.function` (e.g.
    `dynamic_step_driver`, `dynamic_episode_driver`) compiles with the policy into one
    graph. Specs are those of the host twin's `GymnasiumPyEnvironment` (discrete actions
    int64), and time steps follow TF-Agents' auto-reset: a terminated episode ends with
    discount 0, a truncated one with `discount` (so value targets bootstrap), and the next
    `step` of that entry ignores its action and returns a `FIRST` step with reward 0. Each
    `reset` (and `set_tasks`) continues the env's random stream, so a bandit's coins do
    not repeat between resets.

    Args:
        env: A `GraphTaskEnv` with autoreset mode NEXT_STEP (TF-Agents' convention).
        tasks: Float tensor/array `[T, task_size]` (see `env.encode_tasks`, `env.sample_tasks`).
        envs_per_task: Sub-environments per task.
        seed: Seed of the env's random stream (a Python int).
        discount: Discount of ordinary and truncated transitions.

    Raises:
        TypeError: If `env` is not a `GraphTaskEnv`.
        ValueError: For another autoreset mode, tasks of the wrong shape, or a
            non-positive `envs_per_task`.

    Example:

    >>> from keras_meta.rl import GraphNavigation2D
    >>> graph_env = GraphNavigation2D(horizon=10)
    >>> env = GraphTFEnvironment(graph_env, graph_env.sample_tasks(4, seed=0), envs_per_task=5)
    >>> env.batch_size
    20
    """

    def __init__(self, env, tasks, envs_per_task, seed=0, discount=1.0):
        if not isinstance(env, GraphTaskEnv):
            raise TypeError("Expected `env` to be a keras_meta.rl.GraphTaskEnv (e.g. GraphNavigation2D). "
                            f"Received: env of type {type(env).__name__}")
        if env.autoreset_mode.name != "NEXT_STEP":
            raise ValueError("Expected `env` with autoreset_mode NEXT_STEP (TF-Agents resets on the step after "
                             f"LAST). Received: autoreset_mode={env.autoreset_mode.name}")
        self._envs = check_positive_int(envs_per_task, "envs_per_task")
        state, obs = env.reset(tasks, self._envs, seed=check_seed(seed))
        self._env = env
        self._num_tasks = int(state["task"].shape[0])
        time_step_spec, action_spec = specs_for(env.host_env())
        super().__init__(time_step_spec, action_spec, batch_size=self._num_tasks * self._envs)
        self._discount = tf.constant(discount, tf.float32)
        self._state = tf.nest.map_structure(lambda t: tf.Variable(t, trainable=False), state)
        first = self._time_step(obs, tf.ones_like(state["needs_reset"]), tf.zeros_like(state["needs_reset"]),
                                tf.zeros_like(state["needs_reset"]), tf.zeros(obs.shape[:2]))
        self._time_step_variables = tf.nest.map_structure(lambda t: tf.Variable(t, trainable=False), first)

    @property
    def graph_env(self):
        return self._env

    @property
    def tasks(self):
        """The current tasks `[T, task_size]`."""
        return tf.identity(self._state["task"])

    def _flat(self, value):
        return tf.reshape(value, tf.concat([[self.batch_size], tf.shape(value)[2:]], 0))

    def _time_step(self, obs, first, terminated, truncated, reward):
        step_type = tf.where(first, ts.StepType.FIRST,
                             tf.where(terminated | truncated, ts.StepType.LAST, ts.StepType.MID))
        discount = tf.where(terminated, tf.zeros_like(reward), tf.fill(tf.shape(reward), self._discount))
        return ts.TimeStep(self._flat(step_type), self._flat(reward), self._flat(discount),
                           self._flat(obs))

    def _assign(self, state, time_step):
        tf.nest.map_structure(lambda var, value: var.assign(value), self._state, state)
        tf.nest.map_structure(lambda var, value: var.assign(value), self._time_step_variables, time_step)
        return time_step

    def _current_time_step(self):
        return tf.nest.map_structure(tf.identity, self._time_step_variables)

    def _reset(self):
        # A fresh key from the current one, so the random stream goes on past the reset.
        key = tf.random.experimental.stateless_split(self._state["key"], 1)[0]
        state, obs = self._env.reset(self._state["task"], self._envs, seed=key)
        none = tf.zeros_like(state["needs_reset"])
        return self._assign(state, self._time_step(obs, tf.logical_not(none), none, none,
                                                   tf.zeros(tf.shape(obs)[:2])))

    def _step(self, action):
        action = tf.nest.flatten(action)[0]
        action = tf.reshape(action, tf.concat([[self._num_tasks, self._envs], tf.shape(action)[1:]], 0))
        previous = tf.nest.map_structure(tf.identity, self._state)
        state, obs, reward, terminated, truncated = self._env.step(previous, action)
        # Entries whose last step was LAST were reset by this step (NEXT_STEP autoreset).
        return self._assign(state, self._time_step(obs, previous["needs_reset"], terminated, truncated, reward))

    def set_tasks(self, tasks):
        """Replaces the tasks (same shape) and resets every entry; returns the first time step."""
        tasks = self._env._check_tasks(tasks)
        if not tasks.shape.is_compatible_with(self._state["task"].shape):
            raise ValueError(f"Expected `tasks` of shape {self._state['task'].shape} (the environment's). "
                             f"Received: tasks.shape={tasks.shape}")
        self._state["task"].assign(tasks)
        return self._reset()
