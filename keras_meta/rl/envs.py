"""Task-parametrised environments with the gymnasium API.

Every task environment implements the task interface:

- `sample_tasks(n, seed) -> list` of tasks (a pure function of its arguments),
- `set_task(task)` selects the task used from the next `reset` on,
- `get_task()` returns the current task.

Tasks are small dicts of NumPy values, so they can be logged and pickled.
"""

import functools
import importlib

import numpy as np
import gymnasium
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from keras_meta import _core
from keras_meta._validation import check_positive_int, check_seed
from keras_meta._twin import navigation as _navigation_twin

TASK_INTERFACE = ("sample_tasks", "set_task", "get_task")


def _find_attr(env, name):
    # Task methods live on the innermost task env; gymnasium wrappers hide them.
    if hasattr(env, name):
        return getattr(env, name)
    if hasattr(env, "get_wrapper_attr"):
        try:
            return env.get_wrapper_attr(name)
        except AttributeError:
            return None
    return None


def check_task_env(env):
    """Raises a TypeError unless `env` implements the task interface.

    Args:
        env: A gymnasium environment (possibly wrapped) or vector environment.

    Returns:
        `env`, unchanged.

    Raises:
        TypeError: If `sample_tasks`, `set_task` or `get_task` is missing.
    """
    missing = [n for n in TASK_INTERFACE if not callable(_find_attr(env, n))]
    if missing:
        raise TypeError(
            "Expected `env` to implement the task interface (sample_tasks(n, seed), "
            "set_task(task), get_task()). Received: env of type "
            f"{type(env).__name__} without {', '.join(missing)}. Subclass "
            "keras_meta.rl.TaskEnv or add these methods."
        )
    return env


def as_task_env(env):
    """A checked task environment from an env instance or a function that makes one.

    An env made by a factory keeps it (`_factory`) so vectorised copies can be built.
    """
    if isinstance(env, (gymnasium.Env, gymnasium.vector.VectorEnv)) or not callable(env):
        return check_task_env(env)
    made = check_task_env(env())
    made._factory = env
    return made


def vector_task_env(env, n, horizon, autoreset_mode):
    """`n` copies of the task env `env` as a vector env (the C++ one for navigation).

    Args:
        env: A task env made by `as_task_env` (with `clone()` or a `_factory`).
        n: Number of copies.
        horizon: Episode length of the batched navigation env.
        autoreset_mode: The `gymnasium.vector.AutoresetMode` of a `SyncVectorEnv`.

    Returns:
        A vector env. An exception raised by a sub-environment of a `SyncVectorEnv` is
        re-raised as a `RuntimeError` naming the sub-environment, its task, the episode
        and the step (or reset), chained to the original.

    Raises:
        TypeError: If `env` can neither be cloned nor remade.
    """
    if isinstance(env, (Navigation2D, BatchedNavigation2D)):
        config = (env._proto if isinstance(env, BatchedNavigation2D) else env)._config
        return BatchedNavigation2D(n, horizon=horizon, max_action=config["max_action"],
                                   goal_tolerance=config["goal_tolerance"])
    factory = getattr(env, "_factory", None) or getattr(env, "clone", None)
    if factory is None:
        raise TypeError(
            "Expected `env` to provide clone() (keras_meta.rl.TaskEnv) or to be a function "
            f"returning a task env. Received: env of type {type(env).__name__}")
    return gymnasium.vector.SyncVectorEnv(
        [functools.partial(_LocatedErrors.make, factory, i) for i in range(n)], autoreset_mode=autoreset_mode)


class _LocatedErrors(gymnasium.Wrapper):
    """Re-raises a sub-environment's exception naming its task, episode and step.

    `SyncVectorEnv` steps its sub-environments in a loop and lets their exceptions through
    bare, so this wrapper of every sub-environment of `vector_task_env` is the one place
    that knows which of them failed, on which task and where (RL collection runs through
    it for both `MAMLRL` and `RL2`).

    Args:
        env: The sub-environment.
        index: Its index in the vector env.
    """

    def __init__(self, env, index):
        super().__init__(env)
        self.index = int(index)
        self._episode, self._step = -1, 0  # the first reset, seeded or not, starts episode 0

    @classmethod
    def make(cls, factory, index):
        return cls(factory(), index)

    def reset(self, *, seed=None, options=None):
        # A seeded reset starts a collection; an autoreset (no seed) its next episode.
        self._episode = 0 if seed is not None else self._episode + 1
        self._step = 0
        try:
            return self.env.reset(seed=seed, options=options)
        except Exception as err:
            raise self._located("reset", err) from err

    def step(self, action):
        # A plain try, not a context manager: this runs once per sub-environment step.
        try:
            out = self.env.step(action)
        except Exception as err:
            raise self._located(f"step {self._step}", err) from err
        self._step += 1
        return out

    def _located(self, what, err):
        try:
            task = repr(_find_attr(self.env, "get_task")())
        except Exception:  # The env may be too broken to report its task.
            task = "<unavailable>"
        return RuntimeError(
            f"Expected the task environment to complete {what} of episode {self._episode} "
            f"(sub-environment {self.index}, task={task}). Received: {type(err).__name__}: {err}")


class TaskEnv:
    """Mixin declaring the task interface; subclasses implement all three methods."""

    def sample_tasks(self, n, seed):
        raise NotImplementedError

    def set_task(self, task):
        raise NotImplementedError

    def get_task(self):
        raise NotImplementedError

    def clone(self):
        """A fresh environment of the same kind and configuration (used for vectorisation)."""
        return type(self)(**self._config)


class Navigation2D(gymnasium.Env, TaskEnv):
    """The 2D navigation task of MAML (Finn et al., 2017, sec. 5.3).

    A point starts at the origin; each action moves it by `clip(a, -0.1, 0.1)` per axis.
    The reward is `-||p - goal||` after the move. The episode terminates when the point
    is within 0.01 of the goal on both axes and is truncated after `horizon` steps.
    Goals are drawn from U[-0.5, 0.5]^2.

    Args:
        horizon: Episode length (100 in the paper).
        max_action: Per-axis action bound.
        goal_tolerance: Termination radius per axis.

    Example:

    >>> env = Navigation2D()
    >>> env.set_task(env.sample_tasks(1, seed=0)[0])
    >>> obs, info = env.reset(seed=0)
    >>> obs
    array([0., 0.], dtype=float32)
    """

    metadata = {"render_modes": []}

    def __init__(self, horizon=100, max_action=0.1, goal_tolerance=0.01):
        self._config = dict(horizon=horizon, max_action=max_action, goal_tolerance=goal_tolerance)
        self.horizon = int(horizon)
        self._max = np.float32(max_action)
        self._tol = np.float32(goal_tolerance)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-self._max, self._max, (2,), np.float32)
        self._goal = np.zeros(2, np.float32)
        self._pos = np.zeros(2, np.float32)
        self._steps = 0

    def sample_tasks(self, n, seed):
        rng = np.random.default_rng(check_seed(seed))
        goals = rng.uniform(-0.5, 0.5, (check_positive_int(n, "n"), 2)).astype(np.float32)
        return [{"goal": g} for g in goals]

    def set_task(self, task):
        goal = np.asarray(task["goal"], np.float32)
        if goal.shape != (2,):
            raise ValueError(f"Expected task['goal'] to have shape (2,). Received: shape={goal.shape}")
        self._goal = goal.copy()

    def get_task(self):
        return {"goal": self._goal.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = np.zeros(2, np.float32)
        self._steps = 0
        return self._pos.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32).reshape(2), -self._max, self._max)
        self._pos = (self._pos + action).astype(np.float32)
        diff = self._pos - self._goal
        reward = np.float32(-np.sqrt(np.float64(diff[0]) ** 2 + np.float64(diff[1]) ** 2))
        self._steps += 1
        terminated = bool(np.all(np.abs(diff) < self._tol))
        truncated = not terminated and self._steps >= self.horizon
        return self._pos.copy(), float(reward), terminated, truncated, {}


class _MujocoTaskEnv(gymnasium.Wrapper, TaskEnv):
    """A gymnasium MuJoCo v5 env whose reward is replaced by a task reward."""

    env_id = None
    task_key = None  # the task's one scalar parameter, set by each subclass

    def __init__(self, horizon=200, **make_kwargs):
        self._config = dict(horizon=horizon, **make_kwargs)
        super().__init__(gymnasium.make(self.env_id, max_episode_steps=horizon, **make_kwargs))
        self.horizon = int(horizon)
        self._task = self.sample_tasks(1, seed=0)[0]

    def set_task(self, task):
        """Selects `task`, a dict holding the class's `task_key` as one finite number.

        Raises:
            ValueError: For a task without `task_key`, or whose value is not one finite
                number (an array would be broadcast into the reward).
        """
        if not isinstance(task, dict) or self.task_key not in task:
            raise ValueError(f"Expected `task` to hold {self.task_key!r} (as `sample_tasks` returns). "
                             f"Received: task={task!r}")
        raw = task[self.task_key]
        try:
            value = float(raw) if np.ndim(raw) == 0 else None
        except (TypeError, ValueError):
            value = None
        if value is None or not np.isfinite(value):
            raise ValueError(f"Expected task[{self.task_key!r}] to be a finite number. "
                             f"Received: {self.task_key}={raw!r}")
        self._task = {**task, self.task_key: value}

    def get_task(self):
        return dict(self._task)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        reward = self._task_reward(np.asarray(action, np.float64), info)
        return obs.astype(np.float32), float(reward), terminated, truncated, info

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs.astype(np.float32), info

    @property
    def observation_space(self):
        inner = self.env.observation_space
        return spaces.Box(-np.inf, np.inf, inner.shape, np.float32)

    @property
    def spec(self):
        # The wrapped MuJoCo env's spec would recreate this wrapper by calling it on a new
        # env, but it makes its own: its spec recreates it from its arguments (gymnasium's
        # `check_env` recreates envs through `spec.make()`).
        cls = type(self)
        return EnvSpec(f"keras_meta/{cls.__name__}", entry_point=_recreate_task_env,
                       kwargs={"task_env": f"{cls.__module__}:{cls.__qualname__}", **self._config})


def _recreate_task_env(task_env, **kwargs):
    """`spec.make()`'s entry point for a MuJoCo task env: its class by import path.

    A function rather than the class: gymnasium's `make` reads `metadata` off the entry
    point, and on a wrapper class that is a property, not the inner env's dict.
    """
    module, name = task_env.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


class HalfCheetahVel(_MujocoTaskEnv):
    """HalfCheetah-v5 running at a target velocity (MAML sec. 5.3; ProMP).

    Reward: `-|v_x - v_goal| - 0.05 * ||a||^2`, `v_goal ~ U[0, 2]`, horizon 200.
    """

    env_id = "HalfCheetah-v5"
    task_key = "velocity"

    def sample_tasks(self, n, seed):
        rng = np.random.default_rng(check_seed(seed))
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 2.0, check_positive_int(n, "n"))]

    def _task_reward(self, action, info):
        return -abs(info["x_velocity"] - self._task["velocity"]) - 0.05 * np.sum(action**2)


class HalfCheetahDir(_MujocoTaskEnv):
    """HalfCheetah-v5 running forward (+1) or backward (-1) (MAML sec. 5.3).

    Reward: `d * v_x - 0.05 * ||a||^2`, `d ~ U{-1, +1}`, horizon 200.
    """

    env_id = "HalfCheetah-v5"
    task_key = "direction"

    def sample_tasks(self, n, seed):
        rng = np.random.default_rng(check_seed(seed))
        return [{"direction": float(d)} for d in rng.choice([-1.0, 1.0], check_positive_int(n, "n"))]

    def _task_reward(self, action, info):
        return self._task["direction"] * info["x_velocity"] - 0.05 * np.sum(action**2)


class AntDir(_MujocoTaskEnv):
    """Ant-v5 running forward (+1) or backward (-1) along x (MAML sec. 5.3; ProMP).

    Reward: `d * v_x - 0.005 * ||a||^2 - contact_cost + 1` (survival bonus); the episode
    terminates when the torso leaves gymnasium's healthy z range. Horizon 200.
    """

    env_id = "Ant-v5"
    task_key = "direction"

    def sample_tasks(self, n, seed):
        rng = np.random.default_rng(check_seed(seed))
        return [{"direction": float(d)} for d in rng.choice([-1.0, 1.0], check_positive_int(n, "n"))]

    def _task_reward(self, action, info):
        contact = -float(info.get("reward_contact", 0.0))
        return self._task["direction"] * info["x_velocity"] - 0.005 * np.sum(action**2) - contact + 1.0


class BatchedNavigation2D(gymnasium.vector.VectorEnv):
    """`num_envs` 2D navigation episodes stepped together in C++ (NEXT_STEP autoreset).

    Each sub-environment has its own task (`set_tasks`), so one vector env holds a whole
    meta-batch: sub-env `i` of `T * E` typically runs task `i // E`.

    Args:
        num_envs: Number of sub-environments.
        horizon: Episode length.
        backend: "native" (keras_meta._core) or "numpy" (the twin, for tests).

    Example:

    >>> venv = BatchedNavigation2D(4)
    >>> venv.set_tasks(venv.sample_tasks(4, seed=0))
    >>> obs, _ = venv.reset()
    >>> obs.shape
    (4, 2)
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs, horizon=100, max_action=0.1, goal_tolerance=0.01, backend="native"):
        if backend == "native":
            self._impl = _core.BatchedNavigation(num_envs, horizon, max_action, goal_tolerance)
        elif backend == "numpy":
            self._impl = _navigation_twin.BatchedNavigation(num_envs, horizon, max_action, goal_tolerance)
        else:
            raise ValueError(f"Expected `backend` to be 'native' or 'numpy'. Received: backend={backend!r}")
        self._proto = Navigation2D(horizon, max_action, goal_tolerance)
        self.num_envs = int(num_envs)
        self.horizon = int(horizon)
        self.single_observation_space = self._proto.observation_space
        self.single_action_space = self._proto.action_space
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.num_envs, 2), np.float32)
        self.action_space = spaces.Box(-np.float32(max_action), np.float32(max_action), (self.num_envs, 2), np.float32)

    def sample_tasks(self, n, seed):
        return self._proto.sample_tasks(n, seed)

    def set_tasks(self, tasks):
        """Sets one task per sub-environment (a list of `num_envs` tasks)."""
        if len(tasks) != self.num_envs:
            raise ValueError(
                f"Expected one task per sub-environment ({self.num_envs}). Received: {len(tasks)} tasks"
            )
        goals = np.stack([np.asarray(t["goal"], np.float32) for t in tasks])
        if goals.shape != (self.num_envs, 2):
            raise ValueError(
                f"Expected every task's `goal` to have shape (2,). Received: goals.shape={goals.shape} "
                f"for {self.num_envs} tasks"
            )
        self._impl.set_goals(goals)

    def set_task(self, task):
        self.set_tasks([task] * self.num_envs)

    def get_task(self):
        return {"goal": self._impl.goals()[0]}

    def get_tasks(self):
        return [{"goal": g} for g in self._impl.goals()]

    def reset(self, *, seed=None, options=None):
        del seed, options  # deterministic: every episode starts at the origin
        return self._impl.reset(), {}

    def step(self, actions):
        actions = np.ascontiguousarray(actions, dtype=np.float32)
        # Exactly [N, 2]: a transposed or flat array would reshape to [N, 2] without error
        # and hand each sub-environment another one's action.
        if actions.shape != (self.num_envs, 2):
            raise ValueError(
                f"Expected `actions` to have shape ({self.num_envs}, 2). Received: actions.shape={actions.shape}"
            )
        obs, rewards, terminated, truncated = self._impl.step(actions)
        return obs, rewards, terminated, truncated, {}


class BernoulliBandit(gymnasium.Env, TaskEnv):
    """A k-armed Bernoulli bandit as a task environment (RL², Duan et al., 2016, sec. 4.1).

    Each episode is one pull: the action picks an arm, the reward is 1 with the arm's
    probability and 0 otherwise, and the episode terminates. The observation is a
    constant zero vector, so a policy can only tell arms apart through its memory of
    earlier pulls; an RL² trial is several episodes (pulls) of the same task.

    Tasks are `{"probs": p}` with `p ~ U[0, 1]^k` (independent arms), or, with
    `dependent=True` and two arms, `p = (q, 1 - q)`, `q ~ U[0, 1]` (Wang et al., 2016),
    where one pull tells about both arms.

    Args:
        num_arms: Number of arms `k` (at least 2).
        dependent: Draw two-armed tasks as `(q, 1 - q)`.

    Raises:
        ValueError: If `num_arms < 2`, or `dependent` with more than two arms.

    Example:

    >>> env = BernoulliBandit(num_arms=2)
    >>> env.set_task({"probs": [1.0, 0.0]})
    >>> _ = env.reset(seed=0)
    >>> env.step(0)[1:3]
    (1.0, True)
    """

    metadata = {"render_modes": []}

    def __init__(self, num_arms=2, dependent=False):
        if int(num_arms) != num_arms or num_arms < 2:
            raise ValueError(f"Expected `num_arms` to be an integer >= 2. Received: num_arms={num_arms!r}")
        if dependent and num_arms != 2:
            raise ValueError(f"Expected num_arms=2 with dependent=True. Received: num_arms={num_arms!r}")
        self._config = dict(num_arms=int(num_arms), dependent=bool(dependent))
        self.num_arms, self.dependent = int(num_arms), bool(dependent)
        self.horizon = 1
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(self.num_arms)
        self._probs = np.full(self.num_arms, 0.5)
        self._rng = np.random.default_rng()

    def sample_tasks(self, n, seed):
        rng = np.random.default_rng(check_seed(seed))
        n = check_positive_int(n, "n")
        if self.dependent:
            q = rng.uniform(0.0, 1.0, n)
            probs = np.stack([q, 1.0 - q], axis=1)
        else:
            probs = rng.uniform(0.0, 1.0, (n, self.num_arms))
        return [{"probs": p} for p in probs]

    def set_task(self, task):
        probs = np.asarray(task["probs"], np.float64)
        if probs.shape != (self.num_arms,) or np.any(probs < 0) or np.any(probs > 1):
            raise ValueError(
                f"Expected task['probs'] to be {self.num_arms} probabilities in [0, 1]. "
                f"Received: probs={probs.tolist()!r}"
            )
        self._probs = probs.copy()

    def get_task(self):
        return {"probs": self._probs.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        arm = int(np.asarray(action).reshape(()))
        if not 0 <= arm < self.num_arms:
            raise ValueError(f"Expected an arm in [0, {self.num_arms}). Received: action={arm}")
        reward = float(self._rng.random() < self._probs[arm])
        return np.zeros(1, np.float32), reward, True, False, {"best_arm": int(np.argmax(self._probs))}


class PointMass2D(gymnasium.Env, TaskEnv):
    """A 2D point mass pushed to a fixed goal; the task sets its mass and damping.

    The mass starts at rest at the origin. A force `F = clip(a, -1, 1)` per axis moves it
    by semi-implicit Euler steps of `dt`: `v <- v + dt * (F - c * v) / m`, `p <- p + dt * v`.
    The reward is `-||p - goal|| - ctrl_cost * ||F||^2` after the move, the observation is
    `(p, v)`, and episodes are truncated after `horizon` steps (no early termination).
    Neither the mass nor the damping is observed: a policy has to infer them from how
    the mass responds, so the same force plan overshoots a light task and undershoots a
    heavy one. Tasks are `{"mass": m, "damping": c}` with `m ~ U[0.5, 2]`, `c ~ U[0, 1]`.

    Args:
        horizon: Episode length.
        dt: Integration step.
        ctrl_cost: Weight of the squared-force penalty.
        goal: The fixed goal position (2 numbers).

    Example:

    >>> env = PointMass2D()
    >>> env.set_task({"mass": 1.0, "damping": 0.0})
    >>> obs, _ = env.reset(seed=0)
    >>> obs
    array([0., 0., 0., 0.], dtype=float32)
    """

    metadata = {"render_modes": []}

    def __init__(self, horizon=50, dt=0.1, ctrl_cost=0.01, goal=(1.0, 0.5)):
        self._config = dict(horizon=horizon, dt=dt, ctrl_cost=ctrl_cost, goal=tuple(goal))
        self.horizon = check_positive_int(horizon, "horizon")
        self._dt, self._ctrl = np.float32(dt), np.float32(ctrl_cost)
        self._goal = np.asarray(goal, np.float32).reshape(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._task = {"mass": 1.0, "damping": 0.0}
        self._pos = np.zeros(2, np.float32)
        self._vel = np.zeros(2, np.float32)
        self._steps = 0

    def sample_tasks(self, n, seed):
        rng = np.random.default_rng(check_seed(seed))
        n = check_positive_int(n, "n")
        mass, damping = rng.uniform(0.5, 2.0, n), rng.uniform(0.0, 1.0, n)
        return [{"mass": float(m), "damping": float(c)} for m, c in zip(mass, damping)]

    def set_task(self, task):
        try:
            mass, damping = float(task["mass"]), float(task["damping"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("Expected `task` to hold numbers 'mass' and 'damping' (as `sample_tasks` "
                             f"returns). Received: task={task!r}") from None
        if not (np.isfinite(mass) and mass > 0 and np.isfinite(damping) and damping >= 0):
            raise ValueError("Expected task['mass'] > 0 and task['damping'] >= 0, both finite. "
                             f"Received: task={task!r}")
        self._task = {"mass": mass, "damping": damping}

    def get_task(self):
        return dict(self._task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos, self._vel = np.zeros(2, np.float32), np.zeros(2, np.float32)
        self._steps = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        force = np.clip(np.asarray(action, np.float32).reshape(2), np.float32(-1), np.float32(1))
        mass, damping = np.float32(self._task["mass"]), np.float32(self._task["damping"])
        # Written term by term in float32, in the order GraphPointMass2D computes it.
        self._vel = self._vel + self._dt * (force - damping * self._vel) / mass
        self._pos = self._pos + self._dt * self._vel
        diff = self._pos - self._goal
        dist = np.sqrt(diff[0] * diff[0] + diff[1] * diff[1])
        reward = -dist - self._ctrl * (force[0] * force[0] + force[1] * force[1])
        self._steps += 1
        obs = np.concatenate([self._pos, self._vel]).astype(np.float32)
        return obs, float(reward), False, self._steps >= self.horizon, {}
