"""Bad input raises a clear error naming the argument, before any state changes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch

from learner_table import LEARNERS, mlp, weights_of


@pytest.fixture
def learner():
    maml = km.MAML(mlp(), inner_lr=0.01)
    maml.compile(loss="mse")
    return maml


def unchanged(learner, action, error, match):
    before = weights_of(learner)
    with pytest.raises(error, match=match):
        action()
    for a, b in zip(weights_of(learner), before):
        np.testing.assert_array_equal(a, b)
    assert int(learner.task_step.numpy()) == 0


def pool(tasks=4, shots=5, queries=5, x_dim=1):
    rng = np.random.default_rng(0)
    return TaskBatch(rng.normal(size=(tasks, shots, x_dim)).astype("float32"),
                     rng.normal(size=(tasks, shots, 1)).astype("float32"),
                     rng.normal(size=(tasks, queries, x_dim)).astype("float32"),
                     rng.normal(size=(tasks, queries, 1)).astype("float32"))


def test_mismatched_support_and_query_shapes(learner):
    bad = pool()._replace(query_x=np.zeros((4, 5, 2), "float32"))
    unchanged(learner, lambda: learner.fit(bad, meta_batch_size=2, verbose=0), ValueError,
              "same shape.*query_x.shape=\\(4, 5, 2\\)")
    bad = pool()._replace(support_y=np.zeros((4, 3, 1), "float32"))
    unchanged(learner, lambda: learner.fit(bad, meta_batch_size=2, verbose=0), ValueError,
              "support_x.*support_y.*same number of examples")
    bad = pool()._replace(query_y=np.zeros((3, 5, 1), "float32"))
    unchanged(learner, lambda: learner.fit(bad, meta_batch_size=2, verbose=0), ValueError,
              "same meta-batch size")


def test_input_shape_must_match_the_model(learner):
    unchanged(learner, lambda: learner.fit(pool(x_dim=3), meta_batch_size=2, verbose=0),
              ValueError, "model input shape \\(1,\\)")


def test_empty_meta_batch(learner):
    empty = TaskBatch(*(np.zeros((0,) + a.shape[1:], "float32") for a in pool()))
    unchanged(learner, lambda: learner.fit(empty, meta_batch_size=1, verbose=0), ValueError,
              "non-empty meta-batch")
    unchanged(learner, lambda: learner.fit(km.tasks.Sinusoid(), meta_batch_size=0,
                                           steps_per_epoch=1, verbose=0),
              ValueError, "meta_batch_size.*Received: meta_batch_size=0")


def test_non_tensorflow_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="TensorFlow backend.*Received: backend='jax'"):
        km.MAML(mlp())


def test_unbuilt_or_foreign_model():
    with pytest.raises(ValueError, match="Expected `model` to be built"):
        km.MAML(keras.Sequential([keras.layers.Dense(1)]))
    with pytest.raises(TypeError, match="Expected `model` to be a Keras 3"):
        km.MAML(lambda x: x)


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("inner_lr, error", [(0.0, ValueError), (-1.0, ValueError),
                                             (float("nan"), ValueError), ("0.1", TypeError)])
def test_non_positive_inner_lr(name, inner_lr, error):
    with pytest.raises(error, match=f"inner_lr.*Received: inner_lr={inner_lr!r}"):
        LEARNERS[name](mlp(), **{"inner_lr": inner_lr})


@pytest.mark.parametrize("steps, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_non_positive_inner_steps(steps, error):
    with pytest.raises(error, match=f"inner_steps.*Received: inner_steps={steps!r}"):
        km.MAML(mlp(), inner_steps=steps)


def test_bad_adapt_and_evaluate_arguments(learner):
    x = np.zeros((5, 1), "float32")
    unchanged(learner, lambda: learner.adapt(x, np.zeros((4, 1), "float32")), ValueError,
              "same number of examples")
    unchanged(learner, lambda: learner.adapt(x, x, steps=-1), ValueError, "Received: steps=-1")
    unchanged(learner, lambda: learner.adapt(x, x, inner_lr=0), ValueError,
              "Received: inner_lr=0")
    unchanged(learner, lambda: learner.evaluate(km.tasks.Sinusoid(), steps=[1, -1]),
              ValueError, "Received: steps=-1")


def test_dataset_of_the_wrong_structure(learner):
    dataset = tf.data.Dataset.from_tensors((np.zeros((4, 5, 1)), np.zeros((4, 5, 1)))).repeat()
    unchanged(learner, lambda: learner.fit(dataset, steps_per_epoch=1, verbose=0), TypeError,
              "tf.data.Dataset of TaskBatch")
    unchanged(learner, lambda: learner.fit([1, 2, 3], verbose=0), TypeError, "TaskBatch")
    unchanged(learner, lambda: learner.fit("tasks", verbose=0), TypeError,
              "Received: tasks of type str")


def test_distribution_without_steps_per_epoch(learner):
    unchanged(learner, lambda: learner.fit(km.tasks.Sinusoid(), verbose=0), ValueError,
              "steps_per_epoch")


def test_compile_rejects_unknown_execution_modes():
    with pytest.raises(ValueError, match="vectorize.*Received: vectorize='yes'"):
        km.MAML(mlp()).compile(vectorize="yes")


def test_missing_loss_for_a_task_pool():
    maml = km.MAML(mlp())
    maml.compile()
    unchanged(maml, lambda: maml.fit(pool(), meta_batch_size=2, verbose=0), ValueError,
              "Expected a loss")
