"""MANN (Santoro et al., 2016): the LRUA memory against a NumPy twin of the paper's
equations, and the behaviour the paper shows: accuracy on later instances of a class in
an episode rises above the first instance's guess. Generic behaviours (modes, gradients,
saving, export) are in test_sequence_learners.py.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_meta as km

from learner_table import GaussianPrototypes, dense_embedding
from test_protonet import LOSS


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_step(head, state, x, previous_label):
    """One MANN step written from the paper's equations (batch of one)."""
    w = {v.path.split("/", 1)[1]: v.numpy() for v in head.weights}
    h, c, memory, usage, read_weights, reads = state
    heads, size = head.read_heads, head.memory_size
    z = (np.concatenate([x, previous_label, reads]) @ w["controller/kernel"]
         + h @ w["controller/recurrent_kernel"] + w["controller/bias"])
    i, f, g, o = np.split(z, 4)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    keys = np.tanh(h @ w["keys/kernel"] + w["keys/bias"]).reshape(heads, size)
    alpha = sigmoid(h @ w["write_gates/kernel"] + w["write_gates/bias"])[:, None]
    # w^lu_{t-1}: 1 at usages <= the n-th smallest; the least used slot is zeroed.
    least_used = (usage <= np.sort(usage)[heads - 1]).astype(float)
    write_weights = alpha * read_weights + (1 - alpha) * least_used
    memory = memory.copy()
    memory[np.argmin(usage)] = 0
    memory = memory + write_weights.T @ keys
    cosine = (keys @ memory.T) / np.outer(np.sqrt((keys ** 2).sum(1) + 1e-8),
                                          np.sqrt((memory ** 2).sum(1) + 1e-8))
    read_weights = np.exp(cosine) / np.exp(cosine).sum(1, keepdims=True)
    reads = (read_weights @ memory).ravel()
    usage = head.gamma * usage + read_weights.sum(0) + write_weights.sum(0)
    logits = np.concatenate([h, reads]) @ w["logits/kernel"] + w["logits/bias"]
    return (h, c, memory, usage, read_weights, reads), logits


def test_sequence_and_queries_match_a_numpy_twin_of_the_papers_equations():
    mann = km.MANN(dense_embedding(dtype="float64"), num_classes=3, memory_slots=5,
                   memory_size=4, controller_units=6, read_heads=2, gamma=0.9)
    mann.compile(loss=LOSS)
    # Non-zero biases, so every term of the equations counts.
    for v in mann.head.trainable_variables:
        v.assign(np.random.default_rng(1).normal(scale=0.5, size=v.shape))
    sx, sy, qx, _ = (v[0].astype(np.float64) if v.dtype == np.float32 else v[0]
                     for v in GaussianPrototypes(shots=3).sample(1, 2))
    embed = mann.model.predict(np.concatenate([sx, qx]), verbose=0)
    state = tuple(np.asarray(s[0]) for s in mann.head.initial_state())
    previous, expected = np.zeros(3), []
    for t in range(len(sx)):
        state, logits = numpy_step(mann.head, state, embed[t], previous)
        previous = np.eye(3)[sy[t]]
        expected.append(logits)
    np.testing.assert_allclose(mann.predict_sequence(sx, sy), np.stack(expected), rtol=1e-10)
    queries = [numpy_step(mann.head, state, e, previous)[1] for e in embed[len(sx):]]
    np.testing.assert_allclose(mann.adapt(sx, sy).predict(qx, verbose=0), np.stack(queries),
                               rtol=1e-10)
    # The support loop as a tf.while_loop (free support size, as in export_adaptive).
    meta = mann.meta_state()
    read = tf.function(lambda x, y: mann.read_support(meta, meta.non_trainables, x, y)[1],
                       input_signature=[tf.TensorSpec([None, 4], tf.float64),
                                        tf.TensorSpec([None], tf.int64)])
    np.testing.assert_allclose(read(sx, sy), np.stack(expected), rtol=1e-10)


def instance_accuracy(mann, tasks, episodes, seed):
    """Accuracy at the 1st, 2nd, ... instance of each class, with the episodes' values."""
    batch = tasks.sample(episodes, seed)
    hits = np.zeros((episodes, tasks.shots))
    for e, (xs, ys) in enumerate(zip(batch.support_x, batch.support_y)):
        predicted = mann.predict_sequence(xs, ys).argmax(-1)
        seen = np.zeros(tasks.ways, int)
        for t, y in enumerate(ys):
            hits[e, seen[y]] += predicted[t] == y
            seen[y] += 1
    return hits / tasks.ways


def test_accuracy_rises_across_instances_of_a_class():
    tasks = GaussianPrototypes(ways=3, shots=4, queries=1, dim=8, noise=0.1)
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    mann = km.MANN(encoder, num_classes=3, memory_slots=16, memory_size=8, controller_units=32,
                   read_heads=1)
    mann.compile(optimizer=keras.optimizers.Adam(1e-2), vectorize=True, jit_compile=False)
    before = instance_accuracy(mann, tasks, episodes=40, seed=99)
    mann.fit(tasks, meta_batch_size=16, epochs=1, steps_per_epoch=300, verbose=0)
    after = instance_accuracy(mann, tasks, episodes=40, seed=99)
    # A first instance can only be guessed (by elimination of the labels already seen:
    # (1/3 + 1/2 + 1)/3 = 0.61 at best for 3 classes); later ones are recalled from memory.
    assert after[:, 0].mean() < 0.7
    gain = after[:, 1:].mean(1) - after[:, 0]
    assert gain.mean() > 0.1
    assert gain.mean() > 3 * gain.std(ddof=1) / np.sqrt(len(gain))
    # Recall is learned: untrained, later instances are at chance too.
    assert after[:, 1:].mean() > before[:, 1:].mean() + 0.2
