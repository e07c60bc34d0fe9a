"""Layers with random state (Dropout, GaussianNoise) draw fresh randomness at every inner
step, for every task and at every meta-step (the seed-generator state advances)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch
from keras_meta.training import MetaState

from learner_table import LEARNERS, MODES


def dropout_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dropout(0.5, seed=1), keras.layers.GaussianNoise(0.1, seed=2),
                             keras.layers.Dense(1)])


def seed_states(model):
    return [v.numpy().tolist() for v in model.non_trainable_variables if "seed" in v.path]


class _RecordingMAML(km.MAML):
    """MAML whose inner rule leaves the weights unchanged and records each step's gradient."""

    def update_rule(self, meta, inner_lr):
        def update(grads, state, params, step):
            self.recorded.append([g.numpy() for g in grads])
            return params, state

        return km.inner.UpdateRule(lambda params: (), update)


def test_inner_steps_draw_fresh_masks():
    learner = _RecordingMAML(dropout_mlp(), inner_lr=0.1, inner_steps=3)
    learner.compile(loss="mse")
    learner._resolve_loss_and_metrics(None, None)
    learner.recorded = []
    batch = km.tasks.Sinusoid(shots=8, queries=8).sample(1, seed=0)
    learner.adapt_task(learner.meta_state(), tf.constant(batch.support_x[0]),
                       tf.constant(batch.support_y[0]), 3, 0.1, False)
    first, second, third = learner.recorded
    # Same weights at every step: the gradients differ only through the random masks.
    assert not np.allclose(first[0], second[0]) and not np.allclose(second[0], third[0])


@pytest.mark.parametrize("mode", ["function", "xla_vectorized"])
def test_tasks_and_meta_steps_draw_fresh_masks(mode):
    learner = LEARNERS["maml"](dropout_mlp())
    learner.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", **MODES[mode])
    before = seed_states(learner.model)
    # Two identical tasks: their query losses differ only if their masks differ.
    one = km.tasks.Sinusoid(shots=8, queries=8).sample(1, seed=3)
    twins = TaskBatch(*(np.concatenate([v, v]) for v in one))
    curve = learner.evaluate(twins, steps=[1])
    assert curve[1]["loss_ci95"] > 0
    learner.fit(twins, meta_batch_size=2, epochs=1, steps_per_epoch=2, verbose=0)
    after = seed_states(learner.model)
    assert after != before
    # The seed half stays the model's; the counter advanced by the draws of two meta-steps.
    assert [a[0] for a in after] == [b[0] for b in before]
    assert all(a[1] > b[1] for a, b in zip(after, before))


def test_models_without_random_layers_are_untouched():
    learner = LEARNERS["maml"](keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    assert not any(learner.seed_state_mask)
    meta = MetaState([], [tf.constant(1.0)], [])
    assert learner._meta_for_task(meta, 3).non_trainables[0] is meta.non_trainables[0]
