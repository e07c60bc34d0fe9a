"""SNAIL as a meta-RL policy (Mishra et al., 2018), used by `RL2` in place of the GRU."""

import keras
import tensorflow as tf

from keras_meta.algorithms.snail import (AttentionBlock, build_blocks, check_blocks,
                                         make_blocks)
from keras_meta.rl._loop import _positive_int
from keras_meta.rl.policies import RL2Policy

# The paper's multi-armed bandit policy (its appendix): two TC blocks of 32 filters and an
# attention block (key and value size 32) before the policy and value heads.
BANDIT_BLOCKS = (("tc", 32), ("tc", 32), ("attention", 32, 32))


@keras.saving.register_keras_serializable(package="keras_meta")
class SNAILPolicy(RL2Policy):
    """An `RL2Policy` whose core is SNAIL's causal TC and attention blocks over the trial.

    At each step the policy reads the whole trial so far, `x_1 .. x_t` (each
    `[obs, prev_action, prev_reward, prev_done]`, after the optional encoder), through the
    blocks, and the heads read the last position: the paper's meta-RL agent. `RL2` runs it
    unchanged: the "recurrent state" is the window of the last `max_steps` encoded inputs
    with a step count, `[B, max_steps * features + 1]`, reset to zeros at every trial start.
    Positions before the trial start are masked (zero inputs to the causal convolutions,
    never attended to), so a step's output equals the blocks run on the trial's inputs
    alone; a trial longer than `max_steps` is read through its last `max_steps` steps.
    Each step runs the blocks over the window (cost grows with `max_steps`).

    Args:
        observation_dim: Size of the flattened observation.
        num_actions: Number of discrete actions, or None.
        action_dim: Size of a continuous action, or None.
        max_steps: Steps of a trial the policy reads (use the trial length); also the
            TC blocks' `T`.
        blocks: `("tc", filters)` / `("attention", key_size, value_size)` entries
            (default: the paper's bandit policy).
        hidden_units, log_std_init, input_scale: As in `RL2Policy`.
        **kwargs: Passed to `keras.Model`.

    Raises:
        TypeError, ValueError: As `RL2Policy`, or for a bad `max_steps` or `blocks`.

    Example:

    ```python
    env = km.rl.BernoulliBandit(5)
    policy = km.rl.SNAILPolicy.for_env(env, max_steps=100)
    learner = km.rl.RL2(policy, env, episodes_per_trial=100)
    learner.fit(epochs=10, steps_per_epoch=20, meta_batch_size=64)
    ```
    """

    def __init__(self, observation_dim, num_actions=None, action_dim=None, max_steps=64,
                 blocks=BANDIT_BLOCKS, hidden_units=(), log_std_init=0.0, input_scale=None,
                 units=None, **kwargs):
        # `units` (the state width) follows from the rest; accepted as `get_config` gives it.
        self.max_steps = _positive_int(max_steps, "max_steps")
        self.blocks = check_blocks(blocks)
        hidden_units = tuple(int(u) for u in hidden_units)
        actions = num_actions if num_actions is not None else action_dim
        self.features = (hidden_units[-1] if hidden_units
                         else _positive_int(observation_dim, "observation_dim")
                         + _positive_int(actions or 1, "num_actions or action_dim") + 2)
        super().__init__(observation_dim, num_actions=num_actions, action_dim=action_dim,
                         units=self.max_steps * self.features + 1, hidden_units=hidden_units,
                         log_std_init=log_std_init, input_scale=input_scale, **kwargs)

    @classmethod
    def for_env(cls, env, max_steps=64, blocks=BANDIT_BLOCKS, hidden_units=(), log_std_init=0.0,
                input_scale=None):
        """A policy matching a gymnasium env's spaces (as `RL2Policy.for_env`)."""
        template = RL2Policy.for_env(env, units=1)
        return cls(template.observation_dim, num_actions=template.num_actions,
                   action_dim=template.action_dim, max_steps=max_steps, blocks=blocks,
                   hidden_units=hidden_units, log_std_init=log_std_init, input_scale=input_scale)

    def build_core(self):
        self.block_layers = make_blocks(self.blocks, self.max_steps, "float32")
        build_blocks(self.block_layers, self.features)

    def core_step(self, z, state):
        batch = tf.shape(z)[0]
        window = tf.reshape(state[:, :-1], [batch, self.max_steps, self.features])
        window = tf.concat([window[:, 1:], z[:, None]], 1)
        count = tf.minimum(state[:, -1] + 1, self.max_steps)
        # Left-aligned history: the last `count` positions hold the trial's steps.
        valid = tf.range(self.max_steps, dtype=count.dtype)[None] >= (self.max_steps - count)[:, None]
        mask = tf.cast(valid, z.dtype)[..., None]
        sequence = window * mask
        for layer in self.block_layers:
            sequence = layer(sequence, valid) if isinstance(layer, AttentionBlock) else layer(sequence)
            sequence = sequence * mask
        new_state = tf.concat([tf.reshape(window, [batch, self.units - 1]), count[:, None]], -1)
        return sequence[:, -1], new_state

    def get_config(self):
        config = super().get_config()
        config.update(max_steps=self.max_steps, blocks=[list(b) for b in self.blocks])
        return config
