"""Simple Neural Attentive Meta-Learner (Mishra et al., 2018)."""

import math

import keras
import tensorflow as tf

from keras_meta._validation import check_positive_int
from keras_meta.algorithms.sequence import SequenceHead, SequenceLearner

# The paper's Omniglot/mini-ImageNet head (its appendix): attention blocks (key size,
# value size) around two temporal-convolution blocks (filters).
PAPER_BLOCKS = (("attention", 64, 32), ("tc", 128), ("attention", 256, 128), ("tc", 128),
                ("attention", 512, 256))


def causal_shift(sequence, dilation):
    """`sequence` delayed by `dilation` steps along axis 1 (zeros before the start)."""
    padded = tf.pad(sequence, [[0, 0], [dilation, 0], [0, 0]])
    return padded[:, :tf.shape(sequence)[1]]


@keras.saving.register_keras_serializable(package="keras_meta")
class DenseBlock(keras.layers.Layer):
    """A gated dilated causal convolution (kernel size 2), its output concatenated.

    `xf, xg = CausalConv(x; dilation, filters)`; output `[x, tanh(xf) * sigmoid(xg)]`.
    A kernel-size-2 causal convolution with dilation `d` is `W_0 x_{t-d} + W_1 x_t + b`:
    one dense layer on `[x_{t-d}, x_t]` gives both the filter and the gate.

    Args:
        dilation: Dilation rate `d`.
        filters: Output channels `D` added to the input's.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, dilation, filters, **kwargs):
        super().__init__(**kwargs)
        self.dilation, self.filters = int(dilation), int(filters)
        self.conv = keras.layers.Dense(2 * filters, dtype=self.dtype_policy, name="conv")

    def build(self, input_shape):
        self.conv.build((None, 2 * input_shape[-1]))

    def call(self, sequence):
        taps = tf.concat([causal_shift(sequence, self.dilation), sequence], -1)
        return self._gated(sequence, self.conv(taps))

    def delayed_tap(self, x):
        """`W_0 x`: what the convolution at the position `dilation` steps after `x`'s reads
        of it (`x`: `[..., channels]`)."""
        return tf.matmul(x, self.conv.kernel[:x.shape[-1]])

    def step(self, x, delayed=None):
        """The output at one position (fast generation): `x` `[B, channels]` its input,
        `delayed` the `delayed_tap` of the input `dilation` steps earlier (None: before
        the sequence's start)."""
        taps = tf.matmul(x, self.conv.kernel[x.shape[-1]:]) + self.conv.bias
        return self._gated(x, taps if delayed is None else taps + delayed)

    @staticmethod
    def _gated(inputs, taps):
        filters, gates = tf.split(taps, 2, axis=-1)
        return tf.concat([inputs, tf.tanh(filters) * tf.sigmoid(gates)], -1)

    def get_config(self):
        return {**super().get_config(), "dilation": self.dilation, "filters": self.filters}


@keras.saving.register_keras_serializable(package="keras_meta")
class AttentionBlock(keras.layers.Layer):
    """Causal single-head soft attention, its read concatenated to the input.

    `logits = (x W_q)(x W_k)^T / sqrt(K)`, masked to positions `<= t`, softmax,
    `read = probs (x W_v)`; output `[x, read]`.

    Args:
        key_size: `K`.
        value_size: `V`, channels added to the input's.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, key_size, value_size, **kwargs):
        super().__init__(**kwargs)
        self.key_size, self.value_size = int(key_size), int(value_size)
        policy = self.dtype_policy
        self.query_layer = keras.layers.Dense(key_size, dtype=policy, name="query")
        self.key_layer = keras.layers.Dense(key_size, dtype=policy, name="key")
        self.value_layer = keras.layers.Dense(value_size, dtype=policy, name="value")

    def build(self, input_shape):
        for layer in (self.query_layer, self.key_layer, self.value_layer):
            layer.build((None, input_shape[-1]))

    def call(self, sequence, valid=None):
        """`valid`: optional bool `[batch, T]`; positions where it is False are never read."""
        length = tf.shape(sequence)[1]
        readable = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)[None]
        if valid is not None:
            readable = tf.logical_and(readable, valid[:, None, :])
        read = self.attend(self.query_layer(sequence), self.key_layer(sequence),
                           self.value_layer(sequence), readable)
        return tf.concat([sequence, read], -1)

    def attend(self, queries, keys, values, readable):
        """The reads of `queries` `[B, Q, K]` from `keys`/`values` `[B, M, K]`/`[B, M, V]`
        where `readable` (bool, broadcast to `[B, Q, M]`): `[B, Q, V]`."""
        logits = tf.matmul(queries, keys, transpose_b=True) / math.sqrt(self.key_size)
        # The dtype's lowest finite value: masked positions get exactly zero probability.
        logits = tf.where(readable, logits, tf.constant(logits.dtype.min, logits.dtype))
        return tf.matmul(tf.nn.softmax(logits, axis=-1), values)

    def get_config(self):
        return {**super().get_config(), "key_size": self.key_size,
                "value_size": self.value_size}


def check_blocks(blocks):
    """`blocks` as a tuple of `("attention", K, V)` / `("tc", D)` tuples, or raises.

    Raises:
        TypeError, ValueError: If an entry is neither, or a size is not a positive int.
    """
    if isinstance(blocks, (str, bytes)) or not hasattr(blocks, "__iter__"):
        raise TypeError("Expected `blocks` to be a sequence of ('attention', key_size, "
                        f"value_size) and ('tc', filters) entries. Received: blocks={blocks!r}")
    checked = []
    for block in blocks:
        block = tuple(block) if isinstance(block, (list, tuple)) else (block,)
        kind = block[0]
        sizes = {"attention": ("key_size", "value_size"), "tc": ("filters",)}.get(kind)
        if sizes is None or len(block) != 1 + len(sizes):
            raise ValueError("Expected each entry of `blocks` to be ('attention', key_size, "
                             f"value_size) or ('tc', filters). Received: {block!r} in blocks")
        checked.append((kind, *(check_positive_int(v, n) for v, n in zip(block[1:], sizes))))
    if not checked:
        raise ValueError(f"Expected at least one block. Received: blocks={blocks!r}")
    return tuple(checked)


def tc_dilations(sequence_length):
    """The dilations of a TC block's dense blocks: `2, 4, ..., 2^ceil(log2 sequence_length)`."""
    return [2 ** i for i in range(1, max(1, math.ceil(math.log2(sequence_length))) + 1)]


def make_blocks(blocks, sequence_length, dtype):
    """The layers of `blocks` (checked): an `AttentionBlock` per attention entry and, per
    TC entry, a `DenseBlock` per dilation of `tc_dilations(sequence_length)`."""
    layers = []
    for kind, *sizes in check_blocks(blocks):
        if kind == "attention":
            layers.append(AttentionBlock(*sizes, dtype=dtype))
        else:
            layers.extend(DenseBlock(d, sizes[0], dtype=dtype) for d in tc_dilations(sequence_length))
    return layers


def build_blocks(layers, channels):
    """Builds `layers` in order on `channels` input features; returns the output's."""
    for layer in layers:
        layer.build((None, None, channels))
        channels += layer.value_size if isinstance(layer, AttentionBlock) else layer.filters
    return channels


@keras.saving.register_keras_serializable(package="keras_meta")
class SnailHead(SequenceHead):
    """SNAIL's sequence model: TC and attention blocks, then per-step logits.

    Each position holds an example's embedding with its one-hot label (zeros for the
    example to classify). A TC block of sequence length `T` is dense blocks of dilation
    `2, 4, ..., 2^ceil(log2 T)`; a final 1x1 convolution (dense) gives the logits.

    Args:
        num_classes: Classes `N`.
        sequence_length: `T` of the TC blocks (paper: `N K + 1`).
        blocks: `("attention", K, V)` / `("tc", D)` entries (default: the paper's
            Omniglot head).
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, num_classes, sequence_length, blocks=PAPER_BLOCKS, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.sequence_length = int(sequence_length)
        self.blocks = check_blocks(blocks)
        self.block_layers = make_blocks(self.blocks, self.sequence_length, self.dtype_policy)
        self.output_layer = keras.layers.Dense(num_classes, dtype=self.dtype_policy, name="logits")

    def build(self, input_shape):
        channels = build_blocks(self.block_layers, input_shape[-1] + self.num_classes)
        self.output_layer.build((None, None, channels))

    def sequence_logits(self, sequence):
        """Logits `[batch, T, N]` of a batch of sequences `[batch, T, dim + N]`."""
        for layer in self.block_layers:
            sequence = layer(sequence)
        return self.output_layer(sequence)

    def read_support(self, embeddings, labels):
        """The support sequence `[shots, dim + N]` (the model reads it with each query)."""
        return (tf.concat([embeddings, labels], -1),), None

    def read_queries(self, state, embeddings):
        """Each query, with a null label, after the whole support sequence: the last
        position's logits. Support positions do not see the query (causality), so this
        is one sequence per query, batched."""
        support = state[0]
        queries = tf.shape(embeddings)[0]
        last = tf.concat([embeddings, tf.zeros([queries, self.num_classes], embeddings.dtype)], -1)
        sequences = tf.concat([tf.repeat(support[None], queries, axis=0), last[:, None]], 1)
        return self.sequence_logits(sequences)[:, -1]

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length,
                "blocks": [list(b) for b in self.blocks]}


@keras.saving.register_keras_serializable(package="keras_meta")
class SNAIL(SequenceLearner):
    """SNAIL: temporal convolutions and causal attention over the episode sequence.

    The sequence is the support set, each position the embedding `f(x_i)` (`model`)
    concatenated with the one-hot label `y_i`, followed by a query with a null (zero)
    label; the network predicts the query's label at the last position (Mishra et al.,
    2018, section 3 and appendix). Blocks, each concatenating its output to its input:

        DenseBlock(d, D):   xf, xg = CausalConv(x; d, D), CausalConv(x; d, D)  (kernel 2)
                            x <- [x, tanh(xf) * sigmoid(xg)]
        TCBlock(T, D):      DenseBlock(2^i, D) for i = 1 .. ceil(log2 T)
        AttentionBlock(K, V): q, k, v = x W_q, x W_k, x W_v
                            x <- [x, CausalSoftmax(q k^T / sqrt(K)) v]

    and a final 1x1 convolution to `N` logits. The default `blocks` are the paper's
    few-shot head: Attention(64, 32), TC(T, 128), Attention(256, 128), TC(T, 128),
    Attention(512, 256), with `T = N K + 1`. The paper's embedding for Omniglot is four
    blocks of 3x3 conv (64), batch norm, ReLU and 2x2 max-pooling.

    Each query is predicted as the one query after the support sequence (the queries do
    not see each other); the loss is the compiled one (default: the family's) on the
    query logits. `adapt()` returns a Keras model holding the embedded support sequence
    that predicts the logits of new examples (`adapted.export(...)` works), and
    `export_adaptive` exports the reading itself. `evaluate(steps=...)` gives the same
    figures for every step count (there are no adaptation steps).

    Args:
        model: A built Keras 3 model embedding one example (flattened output).
        num_classes: Classes per episode `N`: labels are ids in `[0, N)` or one-hot.
        shots: Support examples per class `K` the TC blocks are sized for (`T = N K + 1`;
            other support sizes still run).
        blocks: Sequence of `("attention", key_size, value_size)` and `("tc", filters)`.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: If `model` is not a Keras 3 model, or a size is not an int.
        ValueError: If `model` is unbuilt, a size is not positive, or a block is malformed.

    Example:

    ```python
    data = km.datasets.glyphs()
    tasks = km.tasks.FewShotClassification(data.images, data.labels, ways=5, shots=1,
                                           queries=5, split=data.split("background"))
    conv4 = km.models.conv4(ways=5)        # the paper's 4 conv blocks (+ a Dense head)
    embedding = keras.Sequential([keras.Input((28, 28, 1)), *conv4.layers[:-1]])
    snail = km.SNAIL(embedding, num_classes=5, shots=1)
    snail.compile(optimizer=keras.optimizers.Adam(1e-3))   # loss: the family's (logits)
    snail.fit(tasks, meta_batch_size=16, epochs=10, steps_per_epoch=1000)
    classifier = snail.adapt(support_x, support_y)         # holds the support sequence
    classifier.predict(query_x)                            # logits for classes 0..4
    ```
    """

    def __init__(self, model, num_classes, shots=1, blocks=PAPER_BLOCKS, **kwargs):
        shots = check_positive_int(shots, "shots")
        blocks = check_blocks(blocks)
        super().__init__(model, num_classes, **kwargs)
        self.shots = shots
        self.set_head(SnailHead(self.num_classes, self.num_classes * shots + 1, blocks,
                                dtype=self._loss_dtype(), name="snail_head"))

    def get_config(self):
        return {**super().get_config(), "shots": self.shots,
                "blocks": [list(b) for b in self.head.blocks]}
