"""The task loop survives grappler's AddN scheduling rewrite (issue 20).

When grappler's static estimate of a graph's peak memory exceeds 80% of the device's free
memory, its memory optimizer turns AddNs into temporary variables, and one created in the
task loop's exit iteration made the next call fail with `AlreadyExistsError` (MAML second
order through 20 inner steps of conv4; `execution.without_addn_scheduling` says how).
`PhantomPeak` brings the estimate past any host's memory at no cost: an identity at run
time whose never-taken branch fills a 4 TiB tensor, which the estimate counts.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta import _compat
from keras_meta.training import execution


class PhantomPeak(keras.layers.Layer):
    def call(self, x):
        side = 2**20
        return tf.cond(tf.reduce_max(x) > 1e30,
                       lambda: x + tf.reduce_sum(tf.fill([side, side], x[0, 0])),
                       lambda: x)


def _learner(phantom):
    layers = [keras.Input((1,)), keras.layers.Dense(8, activation="tanh")]
    layers += [PhantomPeak()] if phantom else []
    model = keras.Sequential(layers + [keras.layers.Dense(1)])
    model.set_weights([np.full(w.shape, 0.1 * (i + 1), "float32")
                       for i, w in enumerate(model.get_weights())])
    learner = km.MAML(model, inner_lr=0.05, inner_steps=2)
    learner.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=False,
                    vectorize=False)
    return learner


def _fit_twice(learner):
    # Two calls of one train function: the second met the first one's leftover variable.
    learner.fit(km.tasks.Sinusoid(shots=4, queries=4), meta_batch_size=3, epochs=2,
                steps_per_epoch=1, seed=0, verbose=0)


def test_second_order_task_loop_runs_again_past_the_rewrite_threshold():
    learner = _learner(phantom=True)
    _fit_twice(learner)
    tasks = km.tasks.Sinusoid(shots=4, queries=4, split="test")
    for _ in range(2):
        learner.evaluate(tasks, meta_batch_size=3, num_batches=1, verbose=0)
    reference = _learner(phantom=False)
    _fit_twice(reference)
    for got, want in zip(learner.model.get_weights(), reference.model.get_weights(),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_the_phantom_peak_triggers_the_failure_without_the_scope(monkeypatch):
    # Without this, the test above could pass because the rewrite no longer happens.
    monkeypatch.setattr(execution, "without_addn_scheduling", contextlib.nullcontext)
    with pytest.raises(tf.errors.AlreadyExistsError, match="TemporaryVariable"):
        _fit_twice(_learner(phantom=True))


def test_the_scope_changes_only_the_calling_threads_options_and_restores_them():
    context, _ = _compat.function_call_options()
    before = context.function_call_options
    with execution.without_addn_scheduling():
        inside = tf.compat.v1.ConfigProto.FromString(
            context.function_call_options.config_proto_serialized)
    rewrite = inside.graph_options.rewrite_options
    assert rewrite.memory_optimization == type(rewrite).SWAPPING_HEURISTICS
    assert context.function_call_options is before
