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
    Each `step` (acting) runs the blocks over the window (cost grows with `max_steps`);
    `unroll` from the initial state (RL2's PPO update) runs them once over each trial.

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

    def unroll(self, inputs, resets, state=None):
        """`RL2Policy.unroll`, with the blocks run once over each trial where that is exact.

        From the initial state (`state=None`), every trial (a reset, or the start of a
        row, to the next reset) at most `max_steps` long is placed at the start of a
        sequence of its own, `[trials, max_steps, features]`, and the blocks run once over
        them: the blocks are causal, so position `t` of that pass is step `t`'s output,
        and the zeros after a trial's end are never read by its steps. Time and memory
        are linear in the sequence length instead of `max_steps` times it. With a given
        `state`, or a trial longer than `max_steps` (read through a sliding window), the
        steps run one by one as in `RL2Policy.unroll`. From the initial state the
        returned states (the windows the steps would hold) are gathered from the encoded
        inputs, not stepped; inside a `tf.function` that does not use them (RL2's PPO
        update) they are pruned.

        Args:
            inputs, resets, state: As in `RL2Policy.unroll`.

        Returns:
            `(dist [B, T, P], values [B, T], states [B, T, units])`.
        """
        if state is not None:
            return super().unroll(inputs, resets, state)
        inputs = tf.convert_to_tensor(inputs, tf.float32)
        resets = tf.convert_to_tensor(resets, tf.bool)
        z = self._encode(inputs)
        batch, length = tf.shape(z)[0], tf.shape(z)[1]
        # The initial state is an empty window: each row starts a trial.
        starts = tf.reshape(tf.concat([tf.ones_like(resets[:, :1]), resets[:, 1:]], 1), [-1])
        flat_index = tf.range(batch * length)
        trial = tf.cumsum(tf.cast(starts, tf.int32)) - 1
        position = flat_index - tf.gather(tf.boolean_mask(flat_index, starts), trial)
        states = self._window_states(z, tf.reshape(position, [batch, length]))

        def one_pass():
            where = tf.stack([trial, position], 1)
            sequence = tf.scatter_nd(where, tf.reshape(z, [-1, self.features]),
                                     [tf.reduce_sum(tf.cast(starts, tf.int32)), self.max_steps,
                                      self.features])
            for layer in self.block_layers:
                sequence = layer(sequence)
            out = tf.gather_nd(sequence, where)
            dist, values = self._heads(tf.reshape(out, [batch, length, out.shape[-1]]))
            return dist, values

        def step_by_step():
            return super(SNAILPolicy, self).unroll(inputs, resets)[:2]

        dist, values = tf.cond(tf.reduce_all(position < self.max_steps), one_pass, step_by_step)
        return dist, values, states

    def _window_states(self, z, position):
        """The state after each step, `[B, T, units]`, for encoded inputs `z` `[B, T, features]`
        and each step's position in its trial: its last `max_steps` inputs, those before
        the trial start zeroed, then the count of steps read."""
        steps = self.max_steps
        padded = tf.pad(z, [[0, 0], [steps - 1, 0], [0, 0]])
        windows = tf.signal.frame(padded, steps, 1, axis=1)
        valid = tf.range(steps)[None, None] >= (steps - 1 - position)[..., None]
        windows = windows * tf.cast(valid, z.dtype)[..., None]
        count = tf.cast(tf.minimum(position + 1, steps), z.dtype)[..., None]
        shape = tf.concat([tf.shape(z)[:2], [steps * self.features]], 0)
        return tf.concat([tf.reshape(windows, shape), count], -1)

    def get_config(self):
        config = super().get_config()
        config.update(max_steps=self.max_steps, blocks=[list(b) for b in self.blocks])
        return config
