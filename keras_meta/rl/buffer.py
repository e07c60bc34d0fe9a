"""Python face of the C++ rollout buffer: gymnasium autoreset handling and dtype checks."""

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from keras_meta import _core
from keras_meta.tasks.base import check_positive_int


def _autoreset_mode(mode):
    if isinstance(mode, AutoresetMode):
        return mode
    try:
        return AutoresetMode(mode)
    except ValueError:
        try:
            return AutoresetMode[str(mode)]
        except KeyError:
            raise ValueError(
                "Expected `autoreset_mode` to be a gymnasium.vector.AutoresetMode. "
                f"Received: autoreset_mode={mode!r}"
            ) from None


def _shape(value, name):
    try:
        dims = tuple(value)
    except TypeError:
        dims = None
    if dims is None or isinstance(value, str) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) for d in dims
    ):
        raise TypeError(f"Expected `{name}` to be a tuple of integers. Received: {name}={value!r}")
    if any(d <= 0 for d in dims):
        raise ValueError(f"Expected `{name}` to have positive dimensions. Received: {name}={value!r}")
    return tuple(int(d) for d in dims)


class RolloutBuffer:
    """Per-task, per-env trajectories in preallocated C++ storage.

    The buffer holds `num_tasks * num_envs` rows of at most `horizon` steps. Each call to
    `add` appends one transition to every row (the output of one vector-env step), so a
    row may hold several consecutive episodes of the same task; `episodes_per_trial`
    groups them into trials (RL²).

    Returns and advantages follow

        R_t = r_t + gamma * R_{t+1}                       inside an episode,
        delta_t = r_t + gamma * V_next - V(s_t),
        A_t = delta_t + gamma * lam * A_{t+1}             inside an episode,

    where at an episode end `V_next = 0` after termination and `V_next = V(final obs)`
    after truncation (or where a row stops mid-episode), and the recursion restarts.

    gymnasium's vector-env autoreset modes are handled in `add`:
    NEXT_STEP (the step after an episode end is a reset step: it is skipped), SAME_STEP
    (the final observation is read from `infos["final_obs"]`). DISABLED is refused, since
    stepping a finished sub-env is undefined there.

    Args:
        num_tasks: Number of tasks `T`.
        num_envs: Environments per task `E`.
        horizon: Steps preallocated per row `H`.
        observation_shape: Shape of one observation.
        action_shape: Shape of one continuous action (ignored when `discrete`).
        discrete: Whether actions are integer indices.
        episodes_per_trial: Episodes per trial (trial ids are `episode // episodes_per_trial`).
        autoreset_mode: The vector env's `gymnasium.vector.AutoresetMode`.
        max_episodes_per_env: Stop recording a row after this many episodes (None: until full).

    Raises:
        TypeError: For a non-integer size or a shape that is not a tuple of integers.
        ValueError: For an unsupported autoreset mode or non-positive sizes.

    Example:

    >>> buf = RolloutBuffer(2, 3, horizon=5, observation_shape=(2,), action_shape=(2,))
    >>> buf.data()["observations"].shape
    (2, 3, 5, 2)
    """

    def __init__(self, num_tasks, num_envs, horizon, observation_shape, action_shape=(1,), discrete=False,
                 episodes_per_trial=1, autoreset_mode=AutoresetMode.NEXT_STEP, max_episodes_per_env=None):
        mode = _autoreset_mode(autoreset_mode)
        if mode is AutoresetMode.DISABLED:
            raise ValueError(
                "Expected a vector env with autoreset_mode NEXT_STEP or SAME_STEP. Received: "
                "autoreset_mode=DISABLED. With DISABLED, finished sub-envs must be reset by hand and "
                "their later steps are undefined; build the env with "
                "autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP (or SAME_STEP), or call "
                "keras_meta._core.RolloutBuffer.add with an explicit `valid` mask."
            )
        num_tasks = check_positive_int(num_tasks, "num_tasks")
        num_envs = check_positive_int(num_envs, "num_envs")
        horizon = check_positive_int(horizon, "horizon")
        episodes_per_trial = check_positive_int(episodes_per_trial, "episodes_per_trial")
        if max_episodes_per_env is not None:
            max_episodes_per_env = check_positive_int(max_episodes_per_env, "max_episodes_per_env")
        self.autoreset_mode = mode
        self.observation_shape = _shape(observation_shape, "observation_shape")
        self.action_shape = () if discrete else _shape(action_shape, "action_shape")
        self.discrete = bool(discrete)
        obs_dim = int(np.prod(self.observation_shape, dtype=np.int64))
        act_dim = 1 if discrete else int(np.prod(self.action_shape, dtype=np.int64))
        self._core = _core.RolloutBuffer(num_tasks, num_envs, horizon, obs_dim, act_dim, bool(discrete),
                                         episodes_per_trial)
        self.num_tasks, self.num_envs, self.horizon = int(num_tasks), int(num_envs), int(horizon)
        self.episodes_per_trial = int(episodes_per_trial)
        self.max_episodes_per_env = max_episodes_per_env
        self._rows = (self.num_tasks, self.num_envs)
        self.clear()

    @classmethod
    def for_env(cls, env, num_tasks, num_envs, horizon, **kwargs):
        """A buffer matching a vector env's spaces and autoreset mode.

        Args:
            env: A gymnasium vector env with `num_tasks * num_envs` sub-envs.
            num_tasks, num_envs, horizon: As in the constructor.
            **kwargs: Other constructor arguments.

        Returns:
            A `RolloutBuffer`.

        Raises:
            ValueError: If the env's autoreset mode is DISABLED or its size does not match.
        """
        if getattr(env, "num_envs", None) != num_tasks * num_envs:
            raise ValueError(
                f"Expected a vector env with num_tasks * num_envs = {num_tasks * num_envs} sub-envs. "
                f"Received: env.num_envs={getattr(env, 'num_envs', None)!r}"
            )
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        obs_space, act_space = env.single_observation_space, env.single_action_space
        discrete = isinstance(act_space, spaces.Discrete)
        return cls(num_tasks, num_envs, horizon, obs_space.shape,
                   action_shape=() if discrete else act_space.shape, discrete=discrete,
                   autoreset_mode=mode, **kwargs)

    @classmethod
    def from_episodes(cls, episodes, observation_shape, action_shape=(1,), discrete=False):
        """A one-task buffer holding finished episodes collected elsewhere, one episode a row.

        Args:
            episodes: A non-empty list of episodes, each a non-empty list of
                `(observation, action, reward, terminated, truncated, next_observation)`.
            observation_shape, action_shape, discrete: As in the constructor.

        Returns:
            A `RolloutBuffer` with `num_tasks=1`, `num_envs=len(episodes)`.
        """
        horizon = max(len(e) for e in episodes)
        buffer = cls(1, len(episodes), horizon, observation_shape, action_shape, discrete=discrete,
                     autoreset_mode=AutoresetMode.SAME_STEP, max_episodes_per_env=1)
        # A row stops recording at its episode's end, so shorter episodes are padded by
        # repeating their last transition.
        for h in range(horizon):
            rows = [e[min(h, len(e) - 1)] for e in episodes]
            stack = lambda i, dtype: np.stack([np.asarray(r[i]) for r in rows])[None].astype(dtype)  # noqa: E731
            buffer.add(stack(0, np.float32), stack(1, np.int64 if discrete else np.float32), stack(2, np.float32),
                       stack(3, bool), stack(4, bool), stack(5, np.float32))
        return buffer

    def clear(self):
        """Empties every row (storage is reused; earlier views see new data)."""
        self._core.clear()
        self._skip = np.zeros(self._rows, bool)
        self._episodes = np.zeros(self._rows, np.int64)

    def _rows_array(self, value, name, tail, kinds, dtype):
        a = np.asarray(value)
        if a.dtype.kind not in kinds:
            kind_names = {"f": "floating", "b": "bool", "i": "integer", "u": "unsigned"}
            expected = " or ".join(kind_names[k] for k in kinds)
            raise TypeError(f"Expected `{name}` to have a {expected} dtype. Received: {name}.dtype={a.dtype}")
        shapes = (self._rows + tail, (self.num_tasks * self.num_envs,) + tail)
        if a.shape not in shapes:
            raise ValueError(
                f"Expected `{name}` to have shape {shapes[0]} or {shapes[1]}. Received: {name}.shape={a.shape}"
            )
        return np.ascontiguousarray(a, dtype=dtype).reshape(self._rows + (-1,) * (len(tail) > 0))

    def add(self, observations, actions, rewards, terminated, truncated, next_observations, infos=None):
        """Records one vector-env step for all rows.

        Args:
            observations: Observations the actions were taken at, `[T, E, *obs]` or `[T*E, *obs]`.
            actions: Actions `[T, E, *act]` (integers `[T, E]` when discrete).
            rewards, terminated, truncated, next_observations, infos: What the vector env's
                `step(actions)` returned.

        Raises:
            TypeError: For a wrong dtype family (e.g. integer observations, float discrete actions).
            ValueError: For wrong shapes or a full row.
        """
        obs = self._rows_array(observations, "observations", self.observation_shape, "fiu", np.float32)
        nxt = self._rows_array(next_observations, "next_observations", self.observation_shape, "fiu", np.float32)
        if self.discrete:
            act = self._rows_array(actions, "actions", (), "iu", np.int64)
        else:
            act = self._rows_array(actions, "actions", self.action_shape, "f", np.float32)
        rew = self._rows_array(rewards, "rewards", (), "fiu", np.float32)
        term = self._rows_array(terminated, "terminated", (), "b", bool)
        trunc = self._rows_array(truncated, "truncated", (), "b", bool)
        if self.autoreset_mode is AutoresetMode.SAME_STEP and infos and "final_obs" in infos:
            # SAME_STEP returns the reset observation; the true final one sits in infos.
            has_final = np.asarray(infos.get("_final_obs", term | trunc)).reshape(self._rows)
            if has_final.any():
                nxt = nxt.copy()
                finals = np.asarray(infos["final_obs"], dtype=object).reshape(-1)
                for flat in np.flatnonzero(has_final):
                    final = np.asarray(finals[flat], np.float32)
                    # A smaller one would be broadcast over the row's features.
                    if final.shape != self.observation_shape:
                        raise ValueError(
                            f"Expected every `infos['final_obs']` entry to have shape {self.observation_shape}. "
                            f"Received: infos['final_obs'][{flat}].shape={final.shape}")
                    nxt.reshape(-1, nxt.shape[-1])[flat] = final.reshape(-1)
        # A full row stops recording (it bootstraps from its last next observation) while
        # rows that skipped reset steps catch up.
        valid = ~self._skip & (self._core.data()["lengths"] < self.horizon)
        if self.max_episodes_per_env is not None:
            valid &= self._episodes < self.max_episodes_per_env
        self._core.add(obs, act, rew, term, trunc, nxt, np.ascontiguousarray(valid))
        ended = valid & (term | trunc)
        self._episodes += ended
        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            self._skip = ended
        return valid

    @property
    def finished(self):
        """True once no row can take another step (all full or all episode quotas met)."""
        lengths = self._core.data()["lengths"]
        full = lengths >= self.horizon
        if self.max_episodes_per_env is not None:
            full |= self._episodes >= self.max_episodes_per_env
        return bool(full.all())

    def data(self):
        """Read-only views of the storage, shaped `[T, E, H, ...]`; steps beyond a row's
        length have mask 0. Keys: observations, next_observations, actions, rewards,
        terminated, truncated, masks, episode_ids, trial_ids, episode_steps, lengths."""
        d = self._core.data()
        lead = self._rows + (self.horizon,)
        d["observations"] = d["observations"].reshape(lead + self.observation_shape)
        d["next_observations"] = d["next_observations"].reshape(lead + self.observation_shape)
        if not self.discrete:
            d["actions"] = d["actions"].reshape(lead + self.action_shape)
        return d

    def gae(self, values, next_values, gamma=0.99, lam=0.95, trial_level=False, out=None):
        """(advantages, returns) `[T, E, H]` float32 given `V(s_t)` and `V(next obs)`.

        `delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)` and `A_t = delta_t + gamma * lam * A_{t+1}`,
        restarted at each episode end (each trial end with `trial_level`); after a
        termination `V(s_{t+1})` is 0, after a truncation it is `next_values_t`. On CPUs with
        AVX2 it is computed in float32 (as TF-Agents does), elsewhere in double precision.

        Args:
            values: `V(s_t)`, float32 `[T, E, H]`.
            next_values: `V(s_{t+1})`, float32 `[T, E, H]`; only read at truncations and
                where a row stops mid-episode.
            gamma: Discount.
            lam: GAE lambda (1: Monte-Carlo advantages, 0: one-step TD).
            trial_level: Treat a trial (not an episode) as the unit of bootstrapping (RL²).
            out: Optional `(advantages, returns)`, float32 C-contiguous `[T, E, H]` arrays
                to write into (as NumPy's `out=`), so that a training loop reuses them
                instead of allocating new ones each iteration. They must not overlap the
                inputs or each other.

        Returns:
            `(advantages, returns)`: `out` when given, else new arrays.

        Raises:
            TypeError: for an input or `out` array of another dtype.
            ValueError: for a wrong shape, a non-contiguous or read-only `out`, or
                overlapping arrays.
        """
        return self._core.gae(values, next_values, gamma, lam, trial_level, out)

    def discounted_returns(self, gamma=0.99, next_values=None, trial_level=False, out=None):
        """Discounted returns `[T, E, H]`; bootstraps from `next_values` on truncation when
        given (else from 0, the REINFORCE convention of the MAML paper). `out`, as in `gae`,
        is an optional float32 array to write into and return."""
        return self._core.discounted_returns(gamma, next_values, trial_level, out)

    def episode_returns(self):
        """Mean undiscounted return per episode for each task, float64 `[T]`."""
        d = self._core.data()
        totals = (d["rewards"] * d["masks"]).sum(axis=(1, 2), dtype=np.float64)
        counts = np.where(d["masks"] > 0, d["episode_ids"] + 1, 0).max(axis=2).sum(axis=1)
        return totals / np.maximum(counts, 1)

    def __len__(self):
        return len(self._core)


def standardize_advantages(advantages, masks, axis=None):
    """Advantages shifted and scaled to mean 0 and std 1 over the unmasked steps, zero elsewhere.

    `(A - mean) / (std + 1e-8) * m`, mean and (population) std taken over the steps where
    `m` is 1, per slice along the axes not in `axis`.

    Args:
        advantages: float32 `[T, E, H]`.
        masks: `[T, E, H]`, 1 for recorded steps.
        axis: Axes the statistics run over: None for the whole batch (RL²), `(1, 2)`
            for each task on its own (MAML-RL).

    Returns:
        float32 `[T, E, H]`.
    """
    n = np.maximum(masks.sum(axis=axis, keepdims=True), 1.0)
    mean = (advantages * masks).sum(axis=axis, keepdims=True) / n
    std = np.sqrt((((advantages - mean) * masks) ** 2).sum(axis=axis, keepdims=True) / n)
    return ((advantages - mean) / (std + 1e-8) * masks).astype(np.float32)
