"""Prototypical Networks: the paper's formula, meta-gradients, modes, saving, export.

ProtoNet is a classification-only learner, so the generic table (regression with mse,
tests/algorithms/learner_table.py) does not run it; this file covers those generic
behaviours (execution modes agree, `.keras` round trip, adapt/evaluate, export) on
few-shot classification tasks. Bad input is in tests/reliability/test_bad_input_catalogue.py.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch

from learner_table import MODES, assert_modes_agree, weights_of
from test_meta_gradients import flat_weights, query_objective

# In float64: a Keras loss object computes in its own dtype.
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")


def embedding(seed=0, dim=4, hidden=6, out=3, dtype="float32"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,), dtype=dtype),
                             keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
                             keras.layers.Dense(out, dtype=dtype)])


def random_tasks(tasks=3, ways=3, shots=2, queries=2, dim=4, seed=0):
    """Random inputs; each task's labels are a shuffled 0..ways-1 pattern (int32)."""
    rng = np.random.default_rng(seed)

    def labels(per_class):
        return np.stack([rng.permutation(np.repeat(np.arange(ways), per_class))
                         for _ in range(tasks)]).astype(np.int32)

    return TaskBatch(rng.normal(size=(tasks, ways * shots, dim)), labels(shots),
                     rng.normal(size=(tasks, ways * queries, dim)), labels(queries))


def signal_in_noise(seed=0, classes=30, per_class=12):
    """8x8 images: a class-specific top row under 56 pixels of uniform noise.

    Distances between raw (or randomly embedded) images are dominated by the noise, so
    an untrained embedding is near chance; one that learns to look at the top row is not.
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 2, (classes, 8)) * 255
    images = rng.integers(0, 256, (classes * per_class, 8, 8))
    labels = np.repeat(np.arange(classes), per_class)
    images[:, 0] = rows[labels]
    return images.astype(np.uint8), labels


IMAGES, LABELS = signal_in_noise()
TASKS = km.tasks.FewShotClassification(IMAGES, LABELS, ways=5, shots=1, queries=4,
                                       split=np.arange(20))
TEST_TASKS = km.tasks.FewShotClassification(IMAGES, LABELS, ways=5, shots=1, queries=4,
                                            split=np.arange(20, 30))


def image_embedding(seed=0):
    keras.utils.set_random_seed(seed)
    # No output bias: distances do not depend on it, so its gradient is rounding noise
    # that Adam would scale up differently in each execution mode.
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(16, use_bias=False)])


def trained(mode="function", steps=3, seed=0):
    learner = km.ProtoNet(image_embedding(seed))
    # SGD, not Adam: Adam rescales a unit's near-zero gradient (rounding noise that
    # differs between execution modes) to a full-size step.
    learner.compile(optimizer=keras.optimizers.SGD(0.1), **MODES[mode])
    history = learner.fit(TASKS, meta_batch_size=4, epochs=1, steps_per_epoch=steps, verbose=0)
    return learner, history


def numpy_embedding(model, x):
    w1, b1, w2, b2 = (v.numpy() for v in model.trainable_variables)
    return np.tanh(x @ w1 + b1) @ w2 + b2


def numpy_logits(model, support_x, support_y, query_x, ways):
    """Snell et al., eq. (1)-(2): c_k = mean f(x_i) over S_k; logits -||f(x) - c_k||^2."""
    support, query = numpy_embedding(model, support_x), numpy_embedding(model, query_x)
    prototypes = np.stack([support[support_y == k].mean(0) for k in range(ways)])
    return -((query[:, None, :] - prototypes[None]) ** 2).sum(-1)


def meta_gradient(learner, batch, mode="function"):
    learner.compile(loss=LOSS, **MODES[mode])
    learner._resolve_loss_and_metrics(None, None)
    learner._resolve_execution()
    grads = learner._meta_gradient_fn()(TaskBatch(*(tf.constant(v) for v in batch)))[0]
    return np.concatenate([np.ravel(g) for g in grads])


def test_meta_gradient_matches_float64_finite_differences():
    learner = km.ProtoNet(embedding(dtype="float64"))
    batch = random_tasks(tasks=3, ways=3, shots=2, seed=1)
    grad = meta_gradient(learner, batch)
    theta = flat_weights(learner)
    rng = np.random.default_rng(0)
    for _ in range(4):
        v = rng.normal(size=theta.shape)
        numeric = (query_objective(learner, batch, theta + 1e-5 * v)
                   - query_objective(learner, batch, theta - 1e-5 * v)) / 2e-5
        np.testing.assert_allclose(grad @ v, numeric, rtol=1e-6, atol=1e-9)
    assert np.abs(grad).max() > 1e-3


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "function"])
def test_meta_gradient_is_the_same_in_every_mode(mode):
    batch = random_tasks(tasks=3, ways=3, shots=2, seed=2)
    np.testing.assert_allclose(
        meta_gradient(km.ProtoNet(embedding(dtype="float64")), batch, mode),
        meta_gradient(km.ProtoNet(embedding(dtype="float64")), batch), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shots", [1, 3])
def test_logits_and_loss_match_the_papers_formula(shots):
    model = embedding(dtype="float64")
    learner = km.ProtoNet(model)
    learner.compile(loss=LOSS)
    learner._resolve_loss_and_metrics(None, None)
    sx, sy, qx, qy = (v[0] for v in random_tasks(tasks=1, ways=3, shots=shots, queries=4, seed=3))
    outputs = learner.task_outputs(learner.meta_state(), (tf.constant(sx), tf.constant(sy),
                                                          tf.constant(qx), tf.constant(qy)))
    expected = numpy_logits(model, sx, sy, qx, ways=3)
    logits = outputs.predictions.numpy()
    # Integer labels give one column per support example; the ones past the 3 classes
    # hold the lowest finite logit.
    assert logits.shape == (12, 3 * shots)
    np.testing.assert_allclose(logits[:, :3], expected, rtol=1e-12)
    assert (logits[:, 3:] == np.finfo(np.float64).min).all()
    log_softmax = expected - np.log(np.exp(expected).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(outputs.loss), -log_softmax[np.arange(12), qy].mean(),
                               rtol=1e-12)
    # One-hot labels give exactly the 3 columns.
    one_hot = learner.predict_adapted(
        learner.meta_state(),
        learner.adapt_states(learner.meta_state(), tf.constant(sx),
                             tf.constant(np.eye(3)[sy]), (0,))[0],
        tf.constant(qx))
    np.testing.assert_allclose(one_hot.numpy(), expected, rtol=1e-12)


def test_execution_modes_agree():
    assert_modes_agree({mode: trained(mode) for mode in MODES},
                       weights_of(km.ProtoNet(image_embedding())))


def test_fit_raises_query_accuracy_above_chance():
    learner = km.ProtoNet(image_embedding())
    learner.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = learner.evaluate(TEST_TASKS, steps=[0], meta_batch_size=10, num_batches=2)[0]
    history = learner.fit(TASKS, meta_batch_size=8, epochs=1, steps_per_epoch=60, verbose=0)
    after = learner.evaluate(TEST_TASKS, steps=[0], meta_batch_size=10, num_batches=2)[0]
    assert set(history.history) == {"loss", "accuracy"}
    chance = 1 / 5
    assert before["accuracy"] < chance + 0.2
    assert after["accuracy"] > chance + 0.4
    assert after["accuracy"] > before["accuracy"] + after["accuracy_ci95"] + before["accuracy_ci95"]


def test_evaluate_gives_accuracy_with_ci_equal_for_every_step_count():
    learner, _ = trained()
    result = learner.evaluate(TEST_TASKS, steps=[0, 5], meta_batch_size=4, num_batches=2, seed=3)
    assert set(result[0]) == {"loss", "loss_ci95", "accuracy", "accuracy_ci95"}
    assert result[0] == result[5]
    assert result[0]["accuracy_ci95"] > 0
    # The same numbers from the adapted Keras models, task by task.
    accuracies = []
    for b in range(2):
        batch = TEST_TASKS.sample(4, km.tasks.step_seed(3, b))
        for sx, sy, qx, qy in zip(*batch):
            predicted = learner.adapt(sx, sy).predict(qx, verbose=0).argmax(-1)
            accuracies.append(np.mean(predicted == qy))
    np.testing.assert_allclose(result[0]["accuracy"], np.mean(accuracies), rtol=1e-6)
    assert learner.default_adapt_steps == 0


def test_adapt_returns_a_classifier_and_leaves_the_learner():
    learner, _ = trained()
    before = weights_of(learner)
    sx, sy, qx, _ = (v[0] for v in TEST_TASKS.sample(1, 0))
    adapted = learner.adapt(sx, sy)
    for a, b in zip(weights_of(learner), before):
        np.testing.assert_array_equal(a, b)
    assert adapted.output_shape == (None, 5)
    assert not any(v is w for v in adapted.weights for w in learner.weights)
    state = learner.adapt_states(learner.meta_state(), tf.constant(sx), tf.constant(sy), (0,))[0]
    np.testing.assert_allclose(adapted.predict(qx, verbose=0),
                               learner.predict_adapted(learner.meta_state(), state, tf.constant(qx)).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_keras_file_round_trip(tmp_path):
    learner, _ = trained()
    path = tmp_path / "protonet.keras"
    learner.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is km.ProtoNet
    for a, b in zip(weights_of(restored), weights_of(learner)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(restored.optimizer.variables, learner.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    sx, sy, qx, _ = (v[0] for v in TEST_TASKS.sample(1, 1))
    np.testing.assert_allclose(restored.adapt(sx, sy).predict(qx, verbose=0),
                               learner.adapt(sx, sy).predict(qx, verbose=0), rtol=1e-6)
    restored.fit(TASKS, meta_batch_size=4, steps_per_epoch=1, verbose=0)
    assert int(restored.task_step.numpy()) == 4


def test_adapted_model_exports_a_savedmodel_plain_tensorflow_serves(tmp_path):
    learner, _ = trained()
    sx, sy, qx, _ = (v[0] for v in TEST_TASKS.sample(1, 2))
    adapted = learner.adapt(sx, sy)
    adapted.export(str(tmp_path / "adapted"))
    adapted.save(tmp_path / "adapted.keras")
    np.save(tmp_path / "x.npy", qx)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(tmp_path / 'adapted')!r})\n"
        f"y = m.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r}))).numpy()\n"
        "assert not any(k.startswith('keras_meta') for k in sys.modules)\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    state = learner.adapt_states(learner.meta_state(), tf.constant(sx), tf.constant(sy), (0,))[0]
    expected = learner.predict_adapted(learner.meta_state(), state, tf.constant(qx)).numpy()[:, :5]
    served = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    reloaded = keras.saving.load_model(tmp_path / "adapted.keras")
    np.testing.assert_allclose(reloaded.predict(qx, verbose=0), served, rtol=1e-6)


class OneHotTasks(km.tasks.TaskDistribution):
    """The image episodes with one-hot float labels and a matching loss."""

    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    metrics = ("accuracy",)

    def sample(self, meta_batch_size, seed):
        batch = TASKS.sample(meta_batch_size, seed)
        one_hot = np.eye(5, dtype=np.float32)
        return TaskBatch(batch.support_x, one_hot[batch.support_y], batch.query_x,
                         one_hot[batch.query_y])


def test_one_hot_labels_train_like_integer_labels():
    integer, integer_history = trained()
    learner = km.ProtoNet(image_embedding())
    learner.compile(optimizer=keras.optimizers.SGD(0.1), **MODES["function"])
    history = learner.fit(OneHotTasks(), meta_batch_size=4, epochs=1, steps_per_epoch=3, verbose=0)
    np.testing.assert_allclose(history.history["loss"], integer_history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["accuracy"], integer_history.history["accuracy"])
    for a, b in zip(weights_of(learner), weights_of(integer)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
