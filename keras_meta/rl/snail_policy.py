"""SNAIL as a meta-RL policy (Mishra et al., 2018), used by `RL2` in place of the GRU."""

import keras
import tensorflow as tf

from keras_meta.algorithms.snail import (AttentionBlock, build_blocks, check_blocks,
                                         make_blocks, tc_dilations)
from keras_meta.rl._loop import _positive_int
from keras_meta.rl.policies import RL2Policy

# The paper's multi-armed bandit policy (its appendix): two TC blocks of 32 filters and an
# attention block (key and value size 32) before the policy and value heads.
BANDIT_BLOCKS = (("tc", 32), ("tc", 32), ("attention", 32, 32))


def _cache_sizes(blocks, max_steps):
    """The state floats each block layer (in `make_blocks` order) caches for acting: a
    dense block of dilation `d` its last `d` tap projections (`2 * filters` each; none for
    `d >= max_steps`, whose tap is always before the trial start within `max_steps` steps),
    an attention block the keys and values of `max_steps` positions."""
    sizes = []
    for kind, *block in blocks:
        if kind == "attention":
            sizes.append(max_steps * (block[0] + block[1]))
        else:
            sizes.extend(d * 2 * block[0] if d < max_steps else 0 for d in tc_dilations(max_steps))
    return tuple(sizes)


@keras.saving.register_keras_serializable(package="keras_meta")
class SNAILPolicy(RL2Policy):
    """An `RL2Policy` whose core is SNAIL's causal TC and attention blocks over the trial.

    At each step the policy reads the whole trial so far, `x_1 .. x_t` (each
    `[obs, prev_action, prev_reward, prev_done]`, after the optional encoder), through the
    blocks, and the heads read the last position: the paper's meta-RL agent. `RL2` runs it
    unchanged: the "recurrent state", `[B, units]`, reset to zeros at every trial start,
    holds what later steps read (WaveNet-style fast generation): the window of the last
    `max_steps` encoded inputs; for each dense block of dilation `d < max_steps` the
    projections `W_0 x` of its last `d` inputs (its causal convolution
    `W_0 x_{t-d} + W_1 x_t + b` reads each one `d` steps later); for each attention block
    the keys and values of the trial's positions; last, the count of steps read (at most
    `max_steps`). So each `step` (acting) computes only the new position through every
    block, the attention reading the cached keys (`max_steps` dot products). Positions
    before the trial start are masked (zero inputs to the causal convolutions, never
    attended to), so a step's output equals the blocks run on the trial's inputs alone.
    A trial longer than `max_steps` is read through its last `max_steps` steps: each such
    window is a sequence of its own (its first positions' convolutions read zeros, so
    every position's activations change as it slides and caches cannot slide exactly), so
    those steps run the blocks over the window (cost grows with `max_steps`) and the
    caches keep the trial's first `max_steps` positions. `unroll` from the initial state
    (RL2's PPO update) runs the blocks once over each trial.

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
        self._cache_sizes = _cache_sizes(self.blocks, self.max_steps)
        super().__init__(observation_dim, num_actions=num_actions, action_dim=action_dim,
                         units=self.max_steps * self.features + 1 + sum(self._cache_sizes),
                         hidden_units=hidden_units,
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
        steps, batch = self.max_steps, tf.shape(z)[0]
        window, *caches, count = tf.split(state, [steps * self.features, *self._cache_sizes, 1], -1)
        window = tf.concat([tf.reshape(window, [batch, steps, self.features])[:, 1:], z[:, None]], 1)
        count = count[:, 0]
        # The steps read before this one: the new step's position in its trial, while
        # that is below `max_steps` (the count stops there).
        out, caches = self._cached_step(z, tf.cast(count, tf.int32), caches)
        beyond = count >= steps

        def window_step():
            # Each step past `max_steps` reads a window of its own (see the class docstring).
            sequence = window
            for layer in self.block_layers:
                sequence = layer(sequence)
            return tf.where(beyond[:, None], sequence[:, -1], out)

        out = tf.cond(tf.reduce_any(beyond), window_step, lambda: out)
        count = tf.minimum(count + 1, steps)
        return out, tf.concat([tf.reshape(window, [batch, steps * self.features]), *caches, count[:, None]], -1)

    def _cached_step(self, x, position, caches):
        """The blocks' output at `position` (int32 `[B]`) for the new encoded input `x`
        `[B, features]`, and the updated `caches` (`_cache_sizes` parts of the state): the
        position's tap projections and keys/values written in, none where `position` is
        `max_steps` (past the trial's first `max_steps` steps, which the caches keep)."""
        steps, batch = self.max_steps, tf.shape(x)[0]
        within = position < steps
        updated = []
        for layer, cache in zip(self.block_layers, caches):
            if isinstance(layer, AttentionBlock):
                here = (tf.range(steps)[None] == position[:, None])[..., None]
                keys, values = (tf.where(here, project(x)[:, None], tf.reshape(part, [batch, steps, -1]))
                                for project, part in zip(
                                    (layer.key_layer, layer.value_layer),
                                    tf.split(cache, [steps * layer.key_size, steps * layer.value_size], -1)))
                readable = (tf.range(steps)[None] <= position[:, None])[:, None]
                read = layer.attend(layer.query_layer(x)[:, None], keys, values, readable)[:, 0]
                updated.append(tf.concat([tf.reshape(keys, [batch, steps * layer.key_size]),
                                          tf.reshape(values, [batch, steps * layer.value_size])], -1))
                x = tf.concat([x, read], -1)
                continue
            # The causal convolution `W_0 x_{t-d} + W_1 x_t + b`, `W_0 x_{t-d}` from the ring
            # of the last `d` projections (slot `t mod d`, zero before the trial's `d`-th step).
            delayed = None
            if layer.dilation < steps:
                ring = tf.reshape(cache, [batch, layer.dilation, 2 * layer.filters])
                slot = position % layer.dilation
                delayed = tf.gather(ring, slot, batch_dims=1)
                here = tf.logical_and(tf.range(layer.dilation)[None] == slot[:, None], within[:, None])
                ring = tf.where(here[..., None], layer.delayed_tap(x)[:, None], ring)
                cache = tf.reshape(ring, [batch, cache.shape[-1]])
            updated.append(cache)
            x = layer.step(x, delayed)
        return x, updated

    def unroll(self, inputs, resets, state=None):
        """`RL2Policy.unroll`, with the blocks run once over each trial where that is exact.

        From the initial state (`state=None`), every trial (a reset, or the start of a
        row, to the next reset) is placed at the start of a sequence of its own,
        `[trials, max_steps, features]` (its first `max_steps` steps), and the blocks run
        once over them: the blocks are causal, so position `t` of that pass is step `t`'s
        output, and the zeros after a trial's end are never read by its steps. Time and
        memory are linear in the sequence length instead of `max_steps` times it. With a
        given `state`, or a trial longer than `max_steps` (read through a sliding window),
        the steps run one by one as in `RL2Policy.unroll`. From the initial state the
        returned states (what `step` would hold: the window, the count and the caches) are
        gathered from the encoded inputs and the pass's activations, not stepped; inside a
        `tf.function` that does not use them (RL2's PPO update) they are pruned.

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
        first = position < self.max_steps
        where = tf.stack([trial, tf.minimum(position, self.max_steps - 1)], 1)
        sequence = tf.scatter_nd(tf.boolean_mask(where, first),
                                 tf.boolean_mask(tf.reshape(z, [-1, self.features]), first),
                                 [tf.reduce_sum(tf.cast(starts, tf.int32)), self.max_steps, self.features])
        layer_inputs = []
        for layer in self.block_layers:
            layer_inputs.append(sequence)
            sequence = layer(sequence)
        states = self._trial_states(z, trial, tf.reshape(position, [batch, length]), layer_inputs)

        def one_pass():
            out = tf.gather_nd(sequence, where)
            return self._heads(tf.reshape(out, [batch, length, out.shape[-1]]))

        def step_by_step():
            return super(SNAILPolicy, self).unroll(inputs, resets)[:2]

        dist, values = tf.cond(tf.reduce_all(first), one_pass, step_by_step)
        return dist, values, states

    def _trial_states(self, z, trial, position, layer_inputs):
        """The state after each step, `[B, T, units]`, for encoded inputs `z` `[B, T, features]`,
        each step's trial (flat int32 `[B * T]`, an index into `layer_inputs`) and position
        in it (`[B, T]`), and each block layer's inputs over the trials' first `max_steps`
        steps (`[trials, max_steps, channels]`): its last `max_steps` inputs, those before
        the trial start zeroed, each layer's cache as `core_step` leaves it (as after step
        `max_steps - 1` for later steps), then the count of steps read (at most `max_steps`)."""
        steps = self.max_steps
        padded = tf.pad(z, [[0, 0], [steps - 1, 0], [0, 0]])
        windows = tf.signal.frame(padded, steps, 1, axis=1)
        valid = tf.range(steps)[None, None] >= (steps - 1 - position)[..., None]
        windows = windows * tf.cast(valid, z.dtype)[..., None]
        count = tf.cast(tf.minimum(position + 1, steps), z.dtype)[..., None]
        shape = tf.shape(z)[:2]
        parts = [tf.reshape(windows, tf.concat([shape, [steps * self.features]], 0))]
        last = tf.minimum(tf.reshape(position, [-1]), steps - 1)
        for layer, sequence, size in zip(self.block_layers, layer_inputs, self._cache_sizes):
            if isinstance(layer, AttentionBlock):
                written = tf.cast(tf.range(steps)[None] <= last[:, None], z.dtype)[..., None]
                cache = [tf.gather(project(sequence), trial) * written
                         for project in (layer.key_layer, layer.value_layer)]
            elif size:
                # Slot `s` of the ring holds the last position `<= last` that is `s` mod `d`.
                held = last[:, None] - (last[:, None] - tf.range(layer.dilation)[None]) % layer.dilation
                projected = layer.delayed_tap(sequence)
                where = tf.stack([tf.broadcast_to(trial[:, None], tf.shape(held)), tf.maximum(held, 0)], -1)
                cache = [tf.gather_nd(projected, where) * tf.cast(held >= 0, z.dtype)[..., None]]
            else:
                continue
            parts.extend(tf.reshape(c, tf.concat([shape, [-1]], 0)) for c in cache)
        return tf.concat([*parts, count], -1)

    def get_config(self):
        config = super().get_config()
        config.update(max_steps=self.max_steps, blocks=[list(b) for b in self.blocks])
        return config
