"""RL²'s policy input: `x_t = [s_t, a_{t-1}, r_{t-1}, d_{t-1}]`, reset at every trial start.

`a_{t-1}` is one-hot for discrete actions, `d_{t-1}` is 1 where step `t - 1` ended an
episode. Inside a trial the previous step's parts are carried across episode ends; at
the first step of a trial they are zeros (a discrete policy then sees an all-zero action
vector, not the one-hot of action 0) and the recurrent state is reset.

Every sampler builds `x_t` here: `RL2.collect` and the Meta-World protocol step by step
through `PreviousStep`, the PPO update from stored trials through `trial_inputs`, and the
TF-Agents `RL2KerasPolicy` inside its graph through `encode_actions` and `inputs`.
"""

import numpy as np
import tensorflow as tf


def encode_actions(policy, actions):
    """The previous-action part of `x_t`: one-hot `[B, num_actions]` or `[B, action_dim]`.

    Args:
        policy: An `RL2Policy`.
        actions: Actions `[B]` (discrete) or `[B, action_dim]`.

    Returns:
        A float32 tensor `[B, policy.action_features]`.
    """
    if policy.discrete:
        return tf.one_hot(tf.cast(tf.reshape(actions, [-1]), tf.int32), policy.num_actions)
    return tf.reshape(tf.cast(actions, tf.float32), [-1, policy.action_dim])


def inputs(policy, observations, prev_action_features, prev_rewards, prev_dones):
    """`x_t = concat([obs, prev_action_features, prev_reward, prev_done])`, float32 `[B, input_dim]`.

    Args:
        policy: An `RL2Policy`.
        observations: `[B, ...]`, flattened per row.
        prev_action_features: `encode_actions` of the previous actions, `[B, action_features]`.
        prev_rewards, prev_dones: `[B]`.
    """
    obs = tf.reshape(tf.cast(observations, tf.float32), [-1, policy.observation_dim])
    act = tf.reshape(tf.cast(prev_action_features, tf.float32), [-1, policy.action_features])
    return tf.concat([obs, act, tf.reshape(tf.cast(prev_rewards, tf.float32), [-1, 1]),
                      tf.reshape(tf.cast(prev_dones, tf.float32), [-1, 1])], axis=-1)


class PreviousStep:
    """What `x_t` carries over from step `t - 1` for `n` rows stepped together, zeros at a trial start.

    Args:
        policy: An `RL2Policy`.
        n: Number of rows.

    Example:

    ```python
    prev = PreviousStep(policy, n)
    x = prev.inputs(obs)                  # x_t for this step
    ...                                   # act, step the env
    prev.record(actions, rewards, terminated | truncated)
    ```
    """

    def __init__(self, policy, n):
        self.policy = policy
        self.action = np.zeros([n, policy.action_features], np.float32)
        self.reward = np.zeros(n, np.float32)
        self.done = np.zeros(n, np.float32)

    def inputs(self, observations):
        """`x_t` for observations `[n, ...]` (see `inputs`)."""
        return inputs(self.policy, np.asarray(observations, np.float32).reshape(len(self.reward), -1),
                      self.action, self.reward, self.done)

    def record(self, actions, rewards, dones, valid=None):
        """Stores step `t`'s action, reward and episode-end flag for `x_{t+1}`.

        Args:
            actions: The policy's actions `[n]` or `[n, action_dim]`.
            rewards: Rewards `[n]`.
            dones: Whether the step ended an episode (terminated or truncated), `[n]`.
            valid: Optional boolean `[n]`; rows where it is false (steps a buffer did
                not record) keep what they had.
        """
        valid = np.ones(len(self.reward), bool) if valid is None else np.asarray(valid, bool)
        self.action = np.where(valid[:, None], encode_actions(self.policy, actions).numpy(), self.action)
        self.reward = np.where(valid, np.asarray(rewards, np.float32).reshape(-1), self.reward)
        self.done = np.where(valid, np.asarray(dones).reshape(-1).astype(np.float32), self.done)


def trial_inputs(policy, data):
    """Policy inputs and state resets for buffer rows, exactly as `RL2.collect` fed them.

    `x_t = [s_t, a_{t-1}, r_{t-1}, d_{t-1}]` inside a trial (`d`: the step ended an
    episode) and `[s_t, 0, 0, 0]` with a state reset at the first step of every trial
    (where the buffer's `trial_ids` change, or at `t = 0`).

    Args:
        policy: An `RL2Policy`.
        data: `RolloutBuffer.data()`.

    Returns:
        `(inputs [N, H, input_dim] float32, resets [N, H] bool)` with `N = T * E`.
    """
    obs = np.asarray(data["observations"], np.float32)
    t, e, h = obs.shape[:3]
    n = t * e
    obs = obs.reshape(n, h, -1)
    actions = np.asarray(data["actions"]).reshape((n, h) if policy.discrete else (n, h, -1))
    if policy.discrete:
        # Steps past a row's length hold no action; clipped, they index the table safely.
        act = np.eye(policy.num_actions, dtype=np.float32)[np.clip(actions, 0, policy.num_actions - 1)]
    else:
        act = actions.astype(np.float32)
    rew = np.asarray(data["rewards"], np.float32).reshape(n, h)
    done = (np.asarray(data["terminated"]) | np.asarray(data["truncated"])).reshape(n, h).astype(np.float32)
    trial = np.asarray(data["trial_ids"]).reshape(n, h)
    resets = np.ones((n, h), bool)
    resets[:, 1:] = trial[:, 1:] != trial[:, :-1]
    prev = np.concatenate([act, rew[..., None], done[..., None]], axis=-1)
    prev = np.concatenate([np.zeros_like(prev[:, :1]), prev[:, :-1]], axis=1)
    prev[resets] = 0.0
    return np.concatenate([obs, prev], axis=-1).astype(np.float32), resets
