"""SNAIL (Mishra et al., 2018): its blocks against NumPy twins of the paper's definitions,
causality, the paper's TC block sizes and the sequence it reads. Generic behaviours
(modes, gradients, saving, export) are in test_sequence_learners.py.
"""

import numpy as np
import tensorflow as tf

import keras_meta as km
from keras_meta.algorithms.snail import AttentionBlock, DenseBlock, SnailHead

from learner_table import GaussianPrototypes, dense_embedding
from test_protonet import LOSS

RNG = np.random.default_rng(0)
SEQUENCE = RNG.normal(size=(2, 7, 5))


def randomized(layer):
    layer.build((None, None, 5))
    for v in layer.weights:
        v.assign(RNG.normal(scale=0.5, size=v.shape))
    return layer


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_dense_block_is_a_gated_dilated_causal_convolution():
    block = randomized(DenseBlock(dilation=2, filters=3, dtype="float64"))
    kernel, bias = (v.numpy() for v in block.conv.weights)
    # Conv1D taps: kernel[:5] on x_{t-2}, kernel[5:] on x_t (x_{t-2} = 0 before the start).
    out = np.zeros((2, 7, 6))
    for t in range(7):
        past = SEQUENCE[:, t - 2] if t >= 2 else np.zeros((2, 5))
        out[:, t] = past @ kernel[:5] + SEQUENCE[:, t] @ kernel[5:] + bias
    expected = np.concatenate([SEQUENCE, np.tanh(out[..., :3]) * sigmoid(out[..., 3:])], -1)
    np.testing.assert_allclose(block(tf.constant(SEQUENCE)), expected, rtol=1e-12)


def test_attention_block_is_causal_scaled_dot_product_attention():
    block = randomized(AttentionBlock(key_size=4, value_size=3, dtype="float64"))
    q, k, v = ((SEQUENCE @ layer.kernel.numpy() + layer.bias.numpy())
               for layer in (block.query_layer, block.key_layer, block.value_layer))
    expected = np.zeros((2, 7, 3))
    for t in range(7):
        logits = np.einsum("bk,bsk->bs", q[:, t], k[:, :t + 1]) / 2.0
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        expected[:, t] = np.einsum("bs,bsv->bv", probs, v[:, :t + 1])
    out = block(tf.constant(SEQUENCE)).numpy()
    np.testing.assert_allclose(out, np.concatenate([SEQUENCE, expected], -1), rtol=1e-12)


def test_head_is_causal_and_sized_as_in_the_paper():
    head = SnailHead(num_classes=5, sequence_length=5 * 1 + 1, dtype="float64")
    head.build((None, 64 - 5))
    # TC(T=6, 128): dense blocks of dilation 2, 4, 8 (ceil(log2 6) = 3), twice.
    dilations = [layer.dilation for layer in head.block_layers if isinstance(layer, DenseBlock)]
    assert dilations == [2, 4, 8, 2, 4, 8]
    # Channels: 64 + 32 + 3*128 + 128 + 3*128 + 256 into the final 1x1 convolution.
    assert head.output_layer.kernel.shape == (64 + 32 + 384 + 128 + 384 + 256, 5)
    sequence = RNG.normal(size=(1, 6, 64))
    changed = sequence.copy()
    changed[:, 4:] += 1.0
    a, b = (head.sequence_logits(tf.constant(s)).numpy() for s in (sequence, changed))
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-6


def test_each_query_is_read_after_the_support_sequence_alone():
    snail = km.SNAIL(dense_embedding(dtype="float64"), num_classes=3, shots=2,
                     blocks=[("tc", 4), ("attention", 4, 3)])
    snail.compile(loss=LOSS)
    sx, sy, qx, _ = (v[0].astype(np.float64) if v.dtype == np.float32 else v[0]
                     for v in GaussianPrototypes().sample(1, 3))
    logits = snail.adapt(sx, sy).predict(qx, verbose=0)
    embed = snail.model.predict(np.concatenate([sx, qx]), verbose=0)
    support = np.concatenate([embed[:len(sx)], np.eye(3)[sy]], -1)
    for q, e in enumerate(embed[len(sx):]):
        sequence = np.concatenate([support, np.concatenate([e, np.zeros(3)])[None]])[None]
        np.testing.assert_allclose(logits[q], snail.head.sequence_logits(tf.constant(sequence))[0, -1],
                                   rtol=1e-10)
