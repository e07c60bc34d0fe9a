"""Model-based learners (MANN, SNAIL) through the generic behaviours: execution modes,
meta-gradients against float64 finite differences, `.keras` round trips, adapt/evaluate
and export. Their own equations are tested in test_mann.py and test_snail.py; bad input
in tests/reliability/test_bad_input_catalogue.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch

from learner_table import (MODES, SEQUENCE_LEARNERS, GaussianPrototypes, assert_modes_agree,
                           dense_embedding, reloaded, weights_of)
from test_meta_gradients import flat_weights, query_objective
from test_protonet import meta_gradient

TASKS = GaussianPrototypes(ways=3, shots=2, queries=2)


def trained(name, mode="function", steps=2):
    learner = SEQUENCE_LEARNERS[name](dense_embedding())
    # SGD: Adam would rescale rounding-level gradient differences between modes.
    learner.compile(optimizer=keras.optimizers.SGD(0.1), **MODES[mode])
    history = learner.fit(TASKS, meta_batch_size=3, epochs=1, steps_per_epoch=steps, verbose=0)
    return learner, history


@pytest.mark.parametrize("name", SEQUENCE_LEARNERS)
def test_meta_gradient_matches_float64_finite_differences(name):
    learner = SEQUENCE_LEARNERS[name](dense_embedding(dtype="float64"))
    batch = TaskBatch(*(v.astype(np.float64) if v.dtype == np.float32 else v
                        for v in TASKS.sample(2, 5)))
    # Eager: the same ops as the compiled step without minutes of tracing.
    grad = meta_gradient(learner, batch, mode="eager")
    head_size = sum(int(np.prod(v.shape)) for v in learner.head.trainable_variables)
    assert np.abs(grad[-head_size:]).max() > 1e-3 and np.abs(grad[:-head_size]).max() > 1e-3
    theta = flat_weights(learner)
    directions = np.random.default_rng(0).normal(size=(3, theta.size))
    numeric = [(query_objective(learner, batch, theta + 1e-5 * v)
                - query_objective(learner, batch, theta - 1e-5 * v)) / 2e-5 for v in directions]
    np.testing.assert_allclose(directions @ grad, numeric, rtol=1e-6, atol=1e-9)


# The task loop, XLA and tf.vectorized_map (MANN unrolls its static support loop, which
# pfor can differentiate). XLA-compiling MANN's unrolled steps takes the longest: -m slow.
@pytest.mark.parametrize("name, modes", [
    ("mann", ("function", "vectorized")),
    pytest.param("mann", ("function", "xla"), marks=pytest.mark.slow),
    ("snail", ("function", "xla", "vectorized")),
])
def test_execution_modes_agree(name, modes):
    assert_modes_agree({mode: trained(name, mode) for mode in modes},
                       weights_of(SEQUENCE_LEARNERS[name](dense_embedding())))


@pytest.mark.parametrize("name", SEQUENCE_LEARNERS)
def test_keras_round_trip_adapt_evaluate_and_export(name, tmp_path):
    learner, _ = trained(name)
    restored = reloaded(learner, tmp_path)
    sx, sy, qx, qy = (v[0] for v in TASKS.sample(1, 9))
    adapted = learner.adapt(sx, sy)
    expected = adapted.predict(qx, verbose=0)
    np.testing.assert_allclose(restored.adapt(sx, sy).predict(qx, verbose=0), expected, rtol=1e-6)
    # The adapted model predicts as the learner's own state does.
    meta = learner.meta_state()
    state = learner.adapt_states(meta, tf.constant(sx), tf.constant(sy), (0,))[0]
    np.testing.assert_allclose(expected, learner.predict_adapted(meta, state, tf.constant(qx)),
                               rtol=1e-5, atol=1e-6)
    # ... and so does its own .keras file and its plain-TF SavedModel.
    adapted.save(tmp_path / "adapted.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "adapted.keras").predict(qx, verbose=0),
                               expected, rtol=1e-6)
    adapted.export(str(tmp_path / "adapted"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "adapted"))  # kept: serve reads its variables
    np.testing.assert_allclose(served.serve(tf.constant(qx)), expected, rtol=1e-5, atol=1e-6)
    # The adaptive SavedModel reads a support set of any size itself.
    learner.export_adaptive(str(tmp_path / "adaptive"))
    loaded = tf.saved_model.load(str(tmp_path / "adaptive"))
    np.testing.assert_allclose(loaded.adapt_and_serve(sx, sy, qx)["predictions"], expected,
                               rtol=1e-5, atol=1e-6)
    # evaluate: every step count the same (no adaptation steps), equal to the adapted models'.
    result = learner.evaluate(TASKS, steps=[0, 3], meta_batch_size=3, num_batches=1, seed=4)
    assert result[0] == result[3]
    accuracies = [np.mean(learner.adapt(*task[:2]).predict(task[2], verbose=0).argmax(-1) == task[3])
                  for task in zip(*TASKS.sample(3, km.tasks.step_seed(4, 0)))]
    np.testing.assert_allclose(result[0]["accuracy"], np.mean(accuracies), rtol=1e-6)


def test_adapted_model_normalises_with_batch_statistics_as_evaluate_does():
    keras.utils.set_random_seed(0)
    embedding = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6),
                                  keras.layers.BatchNormalization(), keras.layers.Activation("tanh")])
    learner = SEQUENCE_LEARNERS["snail"](embedding)
    learner.compile(loss=TASKS.loss)
    sx, sy, qx, _ = (v[0] for v in TASKS.sample(1, 2))
    meta = learner.meta_state()
    state = learner.adapt_states(meta, tf.constant(sx), tf.constant(sy), (0,))[0]
    np.testing.assert_allclose(learner.adapt(sx, sy).predict(qx, batch_size=len(qx), verbose=0),
                               learner.predict_adapted(meta, state, tf.constant(qx)),
                               rtol=1e-5, atol=1e-6)
