"""In-graph batched task environments: TensorFlow twins of the cheap host families.

Each environment is pure-functional over a `[tasks, envs]` batch: `reset` and `step` take
and return a *state* (a dict of tensors, a valid `tf.while_loop`/`tf.scan` loop variable)
and every op is a TensorFlow op (no `py_function`/`numpy_function`), so a whole rollout
compiles into one `tf.function`, under XLA too, and can stay on one device:

    state, obs = env.reset(tasks, envs_per_task)           # obs [T, E, obs_size]
    state, obs, reward, terminated, truncated = env.step(state, action)   # [T, E] each

Tasks are a float32 tensor `[T, task_size]` (`encode_tasks` turns the host twin's task
dicts into one, `decode_tasks` back); sub-environment `(t, e)` runs task `t`.

Episode ends follow gymnasium's vector autoreset modes. With `NEXT_STEP` (the default,
as `BatchedNavigation2D` and MAML-RL's collection) the step after an end resets the
sub-environment: it returns the start observation, reward 0 and neither flag, and ignores
its action. With `SAME_STEP` (RL²'s collection) the ending step already returns the start
observation, and `state["final_observation"]` holds the observation the episode ended
on (as gymnasium's `infos["final_obs"]`). Either way a `SyncVectorEnv` of the host twin
in the same mode, given the same tasks and actions, returns the same observations,
rewards and flags (tested), except for the bandit's coin flips: those come from
TensorFlow's counter-based (Philox) RNG keyed by `seed`, the host's from NumPy's PCG64,
so only their distribution agrees (and the flips of 0/1 probabilities).
"""

import numpy as np
import tensorflow as tf

from keras_meta._validation import check_positive_int, check_seed
from keras_meta.rl import envs as _envs
from keras_meta.rl.buffer import _autoreset_mode


def _stateless_seed(seed):
    """A stateless-RNG seed `[2] int64` from a Python int or an integer tensor ([] or [2])."""
    if isinstance(seed, (tf.Tensor, tf.Variable)):
        if not seed.dtype.is_integer:
            raise TypeError(f"Expected `seed` to be an integer tensor. Received: seed of dtype {seed.dtype.name}")
        seed = tf.cast(seed, tf.int64)
        if seed.shape.rank == 0:
            return tf.stack([tf.zeros_like(seed), seed])
        if seed.shape.as_list() != [2]:
            raise ValueError(f"Expected a tensor `seed` of shape [] or [2]. Received: seed.shape={seed.shape}")
        return seed
    seed = check_seed(seed)
    # Both 32-bit halves, so distinct seeds in [0, 2**64) give distinct keys.
    return tf.constant([seed >> 32, seed & 0xFFFFFFFF], tf.int64)


def _where(cond, new, old):
    """`tf.where` with a `[T, E]` condition broadcast over the trailing axes of `new`."""
    cond = tf.reshape(cond, tf.concat([tf.shape(cond), tf.ones([new.shape.rank - 2], tf.int32)], 0))
    return tf.where(cond, new, old)


class GraphTaskEnv:
    """Base of the in-graph task environments (see the module docstring).

    Subclasses set `observation_size`, `task_size`, `horizon`, either `action_size`
    (continuous, float32 actions `[T, E, action_size]`) or `num_actions` (discrete, int
    actions `[T, E]`), `_task_keys` (`(key, size)` pairs laying a host task dict out in
    the task tensor), and implement `host_env()`, `sample_tasks`, `_start` and
    `_transition`.

    Args:
        autoreset_mode: `gymnasium.vector.AutoresetMode.NEXT_STEP` or `SAME_STEP` (or
            their values "NextStep"/"SameStep").

    Raises:
        ValueError: For another autoreset mode.
    """

    action_size = None
    num_actions = None
    _task_keys = ()

    def __init__(self, autoreset_mode="NextStep"):
        mode = _autoreset_mode(autoreset_mode)
        if mode.name not in ("NEXT_STEP", "SAME_STEP"):
            raise ValueError("Expected `autoreset_mode` to be NEXT_STEP or SAME_STEP. Received: "
                             f"autoreset_mode={autoreset_mode!r}")
        self.autoreset_mode = mode

    @property
    def discrete(self):
        return self.num_actions is not None

    def host_env(self):
        """The host (gymnasium) twin with the same configuration."""
        raise NotImplementedError

    def encode_tasks(self, tasks):
        """Host task dicts (as the host twin's `sample_tasks` returns) as a `[n, task_size]` array.

        Args:
            tasks: A non-empty list of task dicts.

        Returns:
            A float32 NumPy array, one row per task.

        Raises:
            ValueError: For an empty list, or a task the host twin's `set_task` refuses.
        """
        if not isinstance(tasks, (list, tuple)) or not tasks:
            raise ValueError(f"Expected `tasks` to be a non-empty list of task dicts. Received: tasks={tasks!r}")
        host = self.host_env()
        rows = []
        for task in tasks:
            host.set_task(task)  # the host's own checks, so both twins accept the same tasks
            task = host.get_task()
            rows.append(np.concatenate([np.asarray(task[k], np.float32).reshape(n) for k, n in self._task_keys]))
        return np.stack(rows)

    def decode_tasks(self, tasks):
        """The host twin's task dicts for a `[n, task_size]` task tensor or array."""
        tasks = np.asarray(tasks, np.float32).reshape(-1, self.task_size)
        out = []
        for row in tasks:
            task, at = {}, 0
            for key, n in self._task_keys:
                task[key] = float(row[at]) if n == 1 else row[at:at + n].copy()
                at += n
            out.append(task)
        return out

    def _check_tasks(self, tasks):
        tasks = tf.convert_to_tensor(tasks, tf.float32)
        if tasks.shape.rank != 2 or tasks.shape[-1] != self.task_size or tasks.shape[0] == 0:
            raise ValueError(f"Expected `tasks` of shape [num_tasks > 0, {self.task_size}] (see encode_tasks). "
                             f"Received: tasks.shape={tasks.shape}")
        value = tf.get_static_value(tasks)
        if value is not None:
            # Known values (eager, or constants) get the host twin's checks; a traced
            # tensor cannot raise from inside the graph.
            self.encode_tasks(self.decode_tasks(value))
        return tasks

    def reset(self, tasks, envs_per_task, seed=None):
        """Starts `envs_per_task` episodes of every task.

        Args:
            tasks: Float tensor `[T, task_size]`.
            envs_per_task: Sub-environments per task (a positive Python int).
            seed: Key of the environment's RNG (Python int, or an integer tensor of shape
                [] or [2] inside a graph); None draws one from TensorFlow's global RNG.

        Returns:
            `(state, observation)`, the observation `[T, E, observation_size]` float32.

        Raises:
            ValueError: For tasks of another shape (or, when their values are known, that
                the host twin refuses) or a non-positive `envs_per_task`.
            TypeError: For a non-integer `envs_per_task` or seed.
        """
        tasks = self._check_tasks(tasks)
        envs = check_positive_int(envs_per_task, "envs_per_task")
        if seed is None:
            key = tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
        else:
            key = _stateless_seed(seed)
        physics, obs = self._start(tasks, envs)
        batch = tf.shape(obs)[:2]
        state = {"task": tasks, "physics": physics, "key": key,
                 "step": tf.zeros(batch, tf.int32), "needs_reset": tf.zeros(batch, tf.bool),
                 "final_observation": obs}
        return state, obs

    def _check_action(self, action, state):
        if self.discrete:
            action = tf.convert_to_tensor(action)
            if not action.dtype.is_integer:
                raise TypeError(f"Expected integer actions (arms). Received: action of dtype {action.dtype.name}")
            wanted = state["step"].shape
            value = tf.get_static_value(action)
            if value is not None and (np.any(value < 0) or np.any(value >= self.num_actions)):
                raise ValueError(f"Expected actions in [0, {self.num_actions}). Received: action={value.tolist()!r}")
            action = tf.cast(action, tf.int32)
        else:
            action = tf.convert_to_tensor(action, tf.float32)
            wanted = state["step"].shape.concatenate([self.action_size])
        if not action.shape.is_compatible_with(wanted):
            raise ValueError(f"Expected `action` of shape {wanted} ([tasks, envs"
                             f"{'' if self.discrete else ', action_size'}]). Received: action.shape={action.shape}")
        return action

    def step(self, state, action):
        """One step of every sub-environment.

        Args:
            state: The state `reset` or the previous `step` returned.
            action: `[T, E, action_size]` float (continuous) or `[T, E]` int (discrete).

        Returns:
            `(state, observation, reward, terminated, truncated)`: observation
            `[T, E, observation_size]` float32, reward `[T, E]` float32, flags `[T, E]` bool.

        Raises:
            ValueError: For an action of another shape (or, when its values are known, an
                arm out of range).
            TypeError: For a float action of a discrete environment.
        """
        action = self._check_action(action, state)
        task = state["task"]
        key, draw = tf.unstack(tf.random.experimental.stateless_split(state["key"], 2))
        physics, obs, reward, terminated = self._transition(task, state["physics"], action, draw)
        steps = state["step"] + 1
        truncated = tf.logical_and(tf.logical_not(terminated), steps >= self.horizon)
        start_physics, start_obs = self._start(task, tf.shape(obs)[1])
        if self.autoreset_mode.name == "NEXT_STEP":
            # The step after an end only resets (the action is ignored), as gymnasium's
            # NEXT_STEP vector envs and csrc/navigation.cc do.
            resetting = state["needs_reset"]
            live = tf.logical_not(resetting)
            terminated, truncated = tf.logical_and(terminated, live), tf.logical_and(truncated, live)
            needs_reset = tf.logical_or(terminated, truncated)
            reward = tf.where(resetting, tf.zeros_like(reward), reward)
        else:
            resetting = tf.logical_or(terminated, truncated)
            needs_reset = tf.zeros_like(resetting)
        # With SAME_STEP an ending step returns the next start and the state keeps the
        # last observation (gymnasium's final_obs); with NEXT_STEP both are the same.
        final_obs, obs = obs, _where(resetting, start_obs, obs)
        if self.autoreset_mode.name == "NEXT_STEP":
            final_obs = obs
        physics = tf.nest.map_structure(lambda new, old: _where(resetting, new, old), start_physics, physics)
        steps = tf.where(resetting, tf.zeros_like(steps), steps)
        state = {"task": task, "physics": physics, "key": key, "step": steps, "needs_reset": needs_reset,
                 "final_observation": final_obs}
        return state, obs, reward, terminated, truncated

    def _start(self, tasks, envs):
        """`(physics, observation)` of every sub-environment at an episode's start."""
        raise NotImplementedError

    def _transition(self, tasks, physics, action, key):
        """`(physics, observation, reward, terminated)` after `action` (`key`: this step's RNG seed)."""
        raise NotImplementedError


def _uniform(shape, seed, low, high):
    return tf.random.stateless_uniform(shape, _stateless_seed(seed), low, high, tf.float32)


class GraphNavigation2D(GraphTaskEnv):
    """In-graph twin of `Navigation2D`/`BatchedNavigation2D` (MAML's 2D navigation).

    Same dynamics, reward (the distance in float64, as the host), clipping, horizon and
    termination rule. Tasks are `[T, 2]` goals. `sample_tasks` draws goals in the graph
    from U[-0.5, 0.5]^2 with TensorFlow's stateless RNG: the same distribution as the
    host's `sample_tasks`, not the same values (pass `encode_tasks(host_tasks)` for those).

    Args:
        horizon: Episode length.
        max_action: Per-axis action bound.
        goal_tolerance: Termination radius per axis.
        autoreset_mode: See `GraphTaskEnv`.

    Example:

    >>> env = GraphNavigation2D(horizon=5)
    >>> state, obs = env.reset(env.sample_tasks(3, seed=0), envs_per_task=4)
    >>> state, obs, reward, terminated, truncated = env.step(state, tf.fill([3, 4, 2], 0.1))
    >>> obs.shape, reward.shape
    (TensorShape([3, 4, 2]), TensorShape([3, 4]))
    """

    observation_size = action_size = task_size = 2
    _task_keys = (("goal", 2),)

    def __init__(self, horizon=100, max_action=0.1, goal_tolerance=0.01, autoreset_mode="NextStep"):
        super().__init__(autoreset_mode)
        self.horizon = check_positive_int(horizon, "horizon")
        self.max_action, self.goal_tolerance = float(max_action), float(goal_tolerance)

    def host_env(self):
        return _envs.Navigation2D(self.horizon, self.max_action, self.goal_tolerance)

    def sample_tasks(self, n, seed):
        """`[n, 2]` goals from U[-0.5, 0.5]^2, drawn in the graph (see the class docstring)."""
        return _uniform([check_positive_int(n, "n"), 2], seed, -0.5, 0.5)

    def _start(self, tasks, envs):
        position = tf.zeros(tf.stack([tf.shape(tasks)[0], envs, 2]), tf.float32)
        return {"position": position}, position

    def _transition(self, tasks, physics, action, key):
        bound = np.float32(self.max_action)
        moved = physics["position"] + tf.clip_by_value(action, -bound, bound)
        diff = moved - tasks[:, None, :]
        wide = tf.cast(diff, tf.float64)
        dist = tf.cast(tf.sqrt(wide[..., 0] ** 2 + wide[..., 1] ** 2), tf.float32)
        terminated = tf.reduce_all(tf.abs(diff) < np.float32(self.goal_tolerance), axis=-1)
        return {"position": moved}, moved, -dist, terminated


class GraphBernoulliBandit(GraphTaskEnv):
    """In-graph twin of `BernoulliBandit`: every step is one pull, ending its episode.

    Tasks are `[T, num_arms]` arm probabilities; actions `[T, E]` integer arms; the
    observation is a constant zero `[T, E, 1]`. A pull pays 1 with its arm's probability,
    drawn from TensorFlow's stateless RNG keyed by the reset's `seed` (see the module
    docstring). Use `autoreset_mode="SameStep"` for RL² trials, where every step is a
    pull; with NEXT_STEP every other step is a reset, as a host `SyncVectorEnv` would do.

    Args:
        num_arms: Number of arms (at least 2).
        dependent: Draw two-armed tasks as `(q, 1 - q)`.
        autoreset_mode: See `GraphTaskEnv`.

    Raises:
        ValueError: As `BernoulliBandit`.
    """

    observation_size = 1
    horizon = 1

    def __init__(self, num_arms=2, dependent=False, autoreset_mode="NextStep"):
        super().__init__(autoreset_mode)
        self._host = _envs.BernoulliBandit(num_arms, dependent)  # its checks of the arguments
        self.num_actions = self.task_size = self._host.num_arms
        self.dependent = self._host.dependent
        self._task_keys = (("probs", self.num_actions),)

    def host_env(self):
        return self._host.clone()

    def sample_tasks(self, n, seed):
        """`[n, num_arms]` arm probabilities drawn in the graph (same law as the host's)."""
        n = check_positive_int(n, "n")
        if self.dependent:
            q = _uniform([n, 1], seed, 0.0, 1.0)
            return tf.concat([q, 1.0 - q], axis=1)
        return _uniform([n, self.num_actions], seed, 0.0, 1.0)

    def _start(self, tasks, envs):
        obs = tf.zeros(tf.stack([tf.shape(tasks)[0], envs, 1]), tf.float32)
        return {}, obs

    def _transition(self, tasks, physics, action, key):
        arm = tf.clip_by_value(action, 0, self.num_actions - 1)  # in a graph nothing can raise
        probs = tf.gather(tasks, arm, batch_dims=1)
        coin = tf.random.stateless_uniform(tf.shape(probs), key, dtype=tf.float32)
        reward = tf.cast(coin < probs, tf.float32)
        obs = tf.zeros(tf.concat([tf.shape(probs), [1]], 0), tf.float32)
        return physics, obs, reward, tf.ones_like(reward, tf.bool)


class GraphPointMass2D(GraphTaskEnv):
    """In-graph twin of `PointMass2D`: a point mass of unknown mass and damping.

    Tasks are `[T, 2]` rows `(mass, damping)`; observations `[T, E, 4]` `(p, v)`; actions
    `[T, E, 2]` forces clipped to [-1, 1]. `sample_tasks` draws `m ~ U[0.5, 2]`,
    `c ~ U[0, 1]` in the graph (the host's law, not its values).

    Args:
        horizon: Episode length.
        dt: Integration step.
        ctrl_cost: Weight of the squared-force penalty.
        goal: The fixed goal position.
        autoreset_mode: See `GraphTaskEnv`.
    """

    observation_size = 4
    action_size = task_size = 2
    _task_keys = (("mass", 1), ("damping", 1))

    def __init__(self, horizon=50, dt=0.1, ctrl_cost=0.01, goal=(1.0, 0.5), autoreset_mode="NextStep"):
        super().__init__(autoreset_mode)
        self._host = _envs.PointMass2D(horizon, dt, ctrl_cost, goal)
        self.horizon = self._host.horizon
        self._dt, self._ctrl, self._goal = self._host._dt, self._host._ctrl, self._host._goal

    def host_env(self):
        return self._host.clone()

    def sample_tasks(self, n, seed):
        n = check_positive_int(n, "n")
        key = _stateless_seed(seed)
        mass = tf.random.stateless_uniform([n, 1], key, 0.5, 2.0)
        damping = tf.random.stateless_uniform([n, 1], key + [0, 1], 0.0, 1.0)
        return tf.concat([mass, damping], axis=1)

    def _start(self, tasks, envs):
        zeros = tf.zeros(tf.stack([tf.shape(tasks)[0], envs, 2]), tf.float32)
        return {"position": zeros, "velocity": zeros}, tf.concat([zeros, zeros], -1)

    def _transition(self, tasks, physics, action, key):
        force = tf.clip_by_value(action, np.float32(-1), np.float32(1))
        mass, damping = tasks[:, None, :1], tasks[:, None, 1:]
        velocity = physics["velocity"] + self._dt * (force - damping * physics["velocity"]) / mass
        position = physics["position"] + self._dt * velocity
        diff = position - self._goal
        dist = tf.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])
        reward = -dist - self._ctrl * (force[..., 0] * force[..., 0] + force[..., 1] * force[..., 1])
        obs = tf.concat([position, velocity], -1)
        terminated = tf.zeros(tf.shape(reward), tf.bool)
        return {"position": position, "velocity": velocity}, obs, reward, terminated
