"""Gymnasium task environments as TF-Agents environments, one or task-batched."""

import numpy as np
from gymnasium import spaces
from tf_agents.environments import batched_py_environment, py_environment, tf_py_environment
from tf_agents.specs import array_spec, tensor_spec
from tf_agents.trajectories import time_step as ts

from keras_meta._validation import check_positive_int
from keras_meta.rl.envs import _find_attr, _LocatedErrors, as_task_env, check_task_env


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


def specs_for(env):
    """`(time_step_spec, action_spec)` as tensor specs for a gymnasium task env."""
    py_env = GymnasiumPyEnvironment(env)
    return (tensor_spec.from_spec(py_env.time_step_spec()), tensor_spec.from_spec(py_env.action_spec()))


def task_batched_env(env, num_tasks, rows_per_task=1, discount=1.0):
    """A `TFPyEnvironment` of `num_tasks * rows_per_task` copies of a host task environment.

    Row `b` is meant to run task `b // rows_per_task` (see `set_tasks`), the layout the
    agents expect. The copies step one after another in this process.

    Args:
        env: A task environment with `clone()` (e.g. `keras_meta.rl.Navigation2D`).
        num_tasks: Tasks per batch.
        rows_per_task: Rows (episodes or trials collected in parallel) per task.
        discount: Discount of ordinary transitions.

    Returns:
        A batched `TFPyEnvironment`.
    """
    num_tasks = check_positive_int(num_tasks, "num_tasks")
    rows_per_task = check_positive_int(rows_per_task, "rows_per_task")
    env = as_task_env(env)
    if not hasattr(env, "clone"):
        raise TypeError(f"Expected a task environment with clone(). Received: env of type {type(env).__name__}")
    copies = [GymnasiumPyEnvironment(env.clone(), discount) for _ in range(num_tasks * rows_per_task)]
    return tf_py_environment.TFPyEnvironment(
        batched_py_environment.BatchedPyEnvironment(copies, multithreading=False))


def set_tasks(env, tasks, rows_per_task=1):
    """Gives row `b` of a batched environment the task `tasks[b // rows_per_task]`.

    Args:
        env: A `TFPyEnvironment` from `task_batched_env`, or an in-graph
            `GraphTFEnvironment` built with `envs_per_task=rows_per_task`.
        tasks: Host task dicts (as `sample_tasks` of the host env returns them), one per
            group of `rows_per_task` rows.
        rows_per_task: Rows per task.

    Raises:
        ValueError: If `len(tasks) * rows_per_task` is not the batch size.
    """
    rows_per_task = check_positive_int(rows_per_task, "rows_per_task")
    tasks = list(tasks)
    if len(tasks) * rows_per_task != env.batch_size:
        raise ValueError(f"Expected len(tasks) * rows_per_task = env.batch_size = {env.batch_size}. Received: "
                         f"{len(tasks)} tasks x rows_per_task={rows_per_task}")
    if hasattr(env, "graph_env"):  # in-graph: one task row per task, rows task-major as here
        env.set_tasks(env.graph_env.encode_tasks(tasks))
        return
    for sub, task in zip(env.pyenv.envs, [task for task in tasks for _ in range(rows_per_task)]):
        sub.set_task(task)
