"""Adaptation sessions: how a learner adapts while an outside loop steps the environments.

An interactive evaluation protocol steps a vector env of one task per row itself: it asks
for actions, hands over each adaptation step, says when to adapt and when evaluated
episodes end (Meta-World's `MetaLearningAgent`, driven by
`metaworld.evaluation.metalearning_evaluation`, through `keras_meta.rl.MetaWorldAgent`).
Every RL learner answers it through one hook, `learner.adaptation_session(num_envs,
next_seed)`, which returns an `AdaptationSession` for a fresh batch of tasks, so the
protocol's adapter never asks which kind of learner it holds:

- `PolicySession`: each row acts with its own policy and, given an adaptation step
  (`MAMLRL.adapt_step`), adapts it on the episodes the row finished; without one (a
  learner with nothing to adapt per task, `MetaGradientPG`) it acts with one fixed policy.
- `RecurrentSession`: a recurrent policy (`RL2` with an `RL2Policy` or `SNAILPolicy`)
  adapts in its memory, which carries on from the adaptation episodes into the evaluated
  ones.
"""

import numpy as np
import tensorflow as tf

from keras_meta.rl.buffer import RolloutBuffer
from keras_meta.rl.rl2_inputs import PreviousStep


def _rows(values, n):
    """`values` as float32 `[n, features]`."""
    return np.asarray(values, np.float32).reshape(n, -1)


class AdaptationSession:
    """One learner adapting to `num_envs` tasks, one per row of a vector env stepped elsewhere.

    The protocol calls, in order: `act` (adaptation actions) and `record` (the step they
    led to) for every step of the adaptation episodes, `adapt` after each round of them,
    then `act(..., evaluating=True)` and `episodes_ended` for the evaluated episodes. The
    defaults record nothing, adapt nothing and ignore episode ends; a subclass implements
    `act` and what its learner needs of the rest.

    Args:
        num_envs: Rows (tasks) of the vector env.
        next_seed: Function of no arguments returning the next stateless sampling seed,
            an int64 tensor `[2]` (the caller's stream, so sessions in turn draw fresh seeds).
    """

    def __init__(self, num_envs, next_seed):
        self.num_envs, self.next_seed = num_envs, next_seed

    def act(self, observations, greedy=False, evaluating=False):
        """The policy's actions for `observations`.

        Args:
            observations: `[num_envs, ...]` observations of the vector env.
            greedy: Take the mode (mean / greedy action) instead of sampling.
            evaluating: Whether the action is for an evaluated episode (no `record`
                follows it).

        Returns:
            NumPy actions `[num_envs, ...]` in policy units (the learner's `env_actions`
            maps them onto the env's).
        """
        raise NotImplementedError

    def record(self, observations, actions, rewards, terminated, truncated):
        """Takes one adaptation step of every row: `actions` led to `observations`, `rewards`.

        Args:
            observations: The observations after the step, `[num_envs, ...]` (an episode's
                final observation where one ended, as far as the protocol passes it).
            actions: The policy's actions that were taken (as `act` returned them).
            rewards, terminated, truncated: `[num_envs]`.
        """

    def adapt(self):
        """Adapts to what `record` took since the last call (after a round of adaptation episodes)."""

    def episodes_ended(self, mask):
        """Rows whose evaluated episode just ended (bool `[num_envs]`)."""


class PolicySession(AdaptationSession):
    """Each row acts with its own policy, adapted on the episodes the row finished.

    Every row starts at `policy`. With `adapt_step`, `record` gathers each row's steps
    into episodes, and `adapt` replaces a row's policy by `adapt_step(policy, buffer)` on
    the episodes it finished since the last `adapt` (an unfinished episode is dropped).
    The protocol passes no final observation, so an episode ending by truncation
    bootstraps from its last observation. Without `adapt_step` the policy stays.

    Args:
        policy: The starting policy (`GaussianPolicy` or `CategoricalPolicy`).
        observation_shape: The env's observation shape (observations are cut to its size).
        num_envs, next_seed: See `AdaptationSession`.
        adapt_step: Function `(policy, RolloutBuffer) -> policy` of one row's adaptation,
            or None.

    Attributes:
        policies: Each row's current policy.
    """

    def __init__(self, policy, observation_shape, num_envs, next_seed, adapt_step=None):
        super().__init__(num_envs, next_seed)
        self.observation_shape = tuple(observation_shape)
        self._obs_dim = int(np.prod(self.observation_shape))
        self._adapt_step = adapt_step
        self._discrete = policy.discrete
        self._action_shape = () if policy.discrete else (policy.action_dim,)
        self.policies = [policy] * num_envs
        self._finished = [[] for _ in range(num_envs)]
        self._current = [[] for _ in range(num_envs)]

    def act(self, observations, greedy=False, evaluating=False):
        obs = _rows(observations, self.num_envs)[:, :self._obs_dim]
        # One call per distinct policy: before any `adapt` every row shares the first one.
        groups = {}
        for i, policy in enumerate(self.policies):
            groups.setdefault(id(policy), (policy, []))[1].append(i)
        out = [None] * self.num_envs
        for policy, rows in groups.values():
            x = tf.constant(obs[rows])
            actions = (policy.mode(None, x) if greedy else policy.sample(None, x, self.next_seed())).numpy()
            for row, action in zip(rows, actions):
                out[row] = action
        return np.stack(out)

    def record(self, observations, actions, rewards, terminated, truncated):
        if self._adapt_step is None:
            return
        obs = _rows(observations, self.num_envs)[:, :self._obs_dim]
        done = np.logical_or(terminated, truncated)
        for i in range(self.num_envs):
            current = self._current[i]
            if current:
                current[-1][5] = obs[i]  # this observation follows the previous step
            # The final observation of an ending episode is not passed: its own stands in.
            current.append([obs[i], actions[i], float(rewards[i]), bool(terminated[i]), bool(truncated[i]), obs[i]])
            if done[i]:
                self._finished[i].append(current)
                self._current[i] = []

    def adapt(self):
        if self._adapt_step is None:
            return
        for i, episodes in enumerate(self._finished):
            if episodes:
                buffer = RolloutBuffer.from_episodes(episodes, self.observation_shape, self._action_shape,
                                                     discrete=self._discrete)
                self.policies[i] = self._adapt_step(self.policies[i], buffer)
        self._finished = [[] for _ in range(self.num_envs)]
        self._current = [[] for _ in range(self.num_envs)]


class RecurrentSession(AdaptationSession):
    """A recurrent policy adapting in its memory across the adaptation and evaluated episodes.

    The session starts a trial (zero memory); every action feeds
    `[s_t, a_{t-1}, r_{t-1}, d_{t-1}]` and carries the memory on; `adapt` does nothing.
    While evaluating, the protocol passes no rewards (Meta-World's evaluation loop), so
    the previous reward comes from the observation, which must carry the previous action,
    reward and done after the env's own features (Meta-World's
    `recurrent_info_in_obs=True`, see `keras_meta.rl.metaworld_eval_envs`).

    Args:
        policy: An `RL2Policy` (or `SNAILPolicy`).
        act: The learner's compiled step, `(inputs, state, seed, deterministic) ->
            (actions, new_state)` (`RL2.act`).
        num_envs, next_seed: See `AdaptationSession`.

    Attributes:
        state: The memory, `[num_envs, units]`.
    """

    def __init__(self, policy, act, num_envs, next_seed):
        super().__init__(num_envs, next_seed)
        self.policy, self._act = policy, act
        self.state = policy.get_initial_state(num_envs)
        self._prev = PreviousStep(policy, num_envs)
        self._pending, self._done = None, np.zeros(num_envs, bool)

    def act(self, observations, greedy=False, evaluating=False):
        obs = _rows(observations, self.num_envs)
        obs_dim = self.policy.observation_dim
        if evaluating and self._pending is not None:
            extra = obs.shape[1] - obs_dim
            if extra != self.policy.action_features + 2:
                raise ValueError(
                    "Expected observations carrying the previous action, reward and done (Meta-World's "
                    f"recurrent_info_in_obs=True, {obs_dim} + {self.policy.action_features} + 2 features) "
                    f"for an RL2 learner in Meta-World's evaluation. Received: observations with {obs.shape[1]} "
                    "features; build the envs with metaworld_eval_envs(..., recurrent=True).")
            # After an episode end the observation is the next start's (reward 0 there).
            self._prev.record(self._pending, obs[:, -2], self._done)
        self._done = np.zeros(self.num_envs, bool)
        actions, self.state = self._act(self._prev.inputs(obs[:, :obs_dim]), self.state, self.next_seed(), greedy)
        actions = actions.numpy()
        self._pending = actions if evaluating else None
        return actions

    def record(self, observations, actions, rewards, terminated, truncated):
        self._prev.record(actions, rewards, np.logical_or(terminated, truncated))
        self._pending = None

    def episodes_ended(self, mask):
        self._done = np.logical_or(self._done, np.asarray(mask, bool))
