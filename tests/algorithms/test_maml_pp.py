"""MAML++: meta-gradients, the paper's schedules, saving and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch

from learner_table import MODES, mlp
from test_meta_gradients import directional_check, meta_gradient, random_batch


def reference_msl_weights(epoch, steps, msl_epochs):
    """The multi-step-loss weights as Antoniou et al.'s code computes them, in NumPy."""
    if epoch >= msl_epochs:
        weights = np.zeros(steps)
        weights[-1] = 1.0
        return weights
    weights = np.full(steps, 1.0 / steps)
    decay = 1.0 / steps / msl_epochs
    floor = 0.03 / steps
    for i in range(steps - 1):
        weights[i] = max(weights[i] - epoch * decay, floor)
    weights[-1] = min(weights[-1] + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights


def spread(learner, seed=0):
    """Makes every learned rate and per-step BatchNorm value distinct, so a mix-up shows."""
    rng = np.random.default_rng(seed)
    for v in learner.extra_meta_variables():
        v.assign(v.numpy() * rng.uniform(0.5, 1.5, v.shape))


def bn_learner(**kwargs):
    defaults = dict(inner_lr=0.3, inner_steps=2, steps_per_epoch=1, msl_epochs=4,
                    first_order_epochs=0)
    learner = km.MAMLPlusPlus(mlp(dtype="float64", hidden=8, batch_norm=True),
                              **{**defaults, **kwargs})
    spread(learner)
    return learner


def test_meta_gradient_with_lslr_and_per_step_batch_norm_matches_finite_differences():
    learner = bn_learner()
    learner.task_step.assign(1)  # epoch 1 of 4: the multi-step loss weights are (3/8, 5/8)
    assert len(learner.batch_norm_steps) == 2  # gamma and beta of step 0
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=3)
    auto, numeric = directional_check(learner, batch)
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-8)
    grad = meta_gradient(learner, batch)
    n_model = sum(int(np.prod(v.shape)) for v in learner.model.trainable_variables)
    rates = int(np.prod(learner.learning_rates.shape))
    assert np.abs(grad[n_model:n_model + rates]).max() > 1e-6  # LSLR learns
    assert np.abs(grad[n_model + rates:]).max() > 1e-6  # step 0's gamma/beta learn


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "function"])
def test_meta_gradient_with_batch_norm_is_the_same_in_every_mode(mode):
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=3)

    def gradient(mode):
        # Epoch 1: first order (first_order_epochs=2) and a mixed multi-step loss.
        learner = bn_learner(first_order_epochs=2)
        learner.task_step.assign(1)
        return meta_gradient(learner, batch, mode)

    np.testing.assert_allclose(gradient(mode), gradient("function"), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps, msl_epochs", [(5, 20), (5, 15), (3, 1), (1, 10), (4, 0)])
def test_multi_step_loss_weights_follow_the_papers_schedule(steps, msl_epochs):
    learner = km.MAMLPlusPlus(mlp(), inner_steps=steps, steps_per_epoch=7, msl_epochs=msl_epochs)
    for epoch in [0, 1, 2, 5, 14, 19, 20, 30]:
        expected = reference_msl_weights(epoch, steps, msl_epochs)
        np.testing.assert_allclose(learner.multi_step_loss_weights(epoch), expected, rtol=1e-12)
        # The tracked meta-step counter drives it: the last meta-step of the epoch.
        learner.task_step.assign(epoch * 7 + 6)
        np.testing.assert_allclose(learner.multi_step_loss_weights(), expected, rtol=1e-12)


def test_task_loss_is_the_weighted_sum_of_the_query_losses_after_each_step():
    learner = km.MAMLPlusPlus(mlp(dtype="float64", hidden=8), inner_lr=0.1, inner_steps=3,
                              steps_per_epoch=1, msl_epochs=5)
    spread(learner)
    learner.task_step.assign(2)
    learner.compile(loss="mse")
    learner._resolve_loss_and_metrics(None, None)
    task = [tf.constant(v[0]) for v in random_batch(tasks=1, shots=6, queries=6, dim=1, seed=4)]
    meta = learner.meta_state()
    states = learner.adapt_states(meta, task[0], task[1], (1, 2, 3), inner_lr=0.1)
    losses = [float(learner.task_loss(task[3], learner.predict_adapted(meta, s, task[2])))
              for s in states]
    expected = reference_msl_weights(2, 3, 5) @ np.array(losses)
    np.testing.assert_allclose(float(learner.task_outputs(meta, task).loss), expected, rtol=1e-12)


def test_derivative_order_switches_from_first_to_second_order_at_the_configured_epoch():
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=5)
    model = mlp(dtype="float64", hidden=8, seed=1)
    n_model = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    # One inner step at the initial rates: MAML++ is (FO)MAML plus a learned rate.
    learner = km.MAMLPlusPlus(model, inner_lr=0.1, inner_steps=1, steps_per_epoch=3,
                              first_order_epochs=2)
    fomaml = meta_gradient(km.FOMAML(mlp(dtype="float64", hidden=8, seed=1), inner_lr=0.1), batch)
    maml = meta_gradient(km.MAML(mlp(dtype="float64", hidden=8, seed=1), inner_lr=0.1), batch)
    assert np.abs(maml - fomaml).max() > 1e-4
    meta_gradient(learner, batch)
    step = learner._meta_gradient_fn()  # one compiled function across the switch
    batch = TaskBatch(*(tf.constant(v) for v in batch))
    for task_step, expected in [(0, fomaml), (5, fomaml), (6, maml), (40, maml)]:
        learner.task_step.assign(task_step)
        grad = np.concatenate([np.ravel(g) for g in step(batch)[0]])
        np.testing.assert_allclose(grad[:n_model], expected, rtol=1e-10, atol=1e-13,
                                   err_msg=f"task_step={task_step}")


def test_keras_round_trip_keeps_weights_config_and_predictions(tmp_path):
    learner = km.MAMLPlusPlus(mlp(batch_norm=True), inner_lr=0.05, inner_steps=3,
                              first_order=False, steps_per_epoch=2, msl_epochs=3,
                              first_order_epochs=1, name="pp")
    learner.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        1e-2, decay_steps=10, alpha=0.01)))
    learner.fit(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=2, steps_per_epoch=3,
                verbose=0)
    path = str(tmp_path / "pp.keras")
    learner.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is km.MAMLPlusPlus
    config = {k: v for k, v in learner.get_config().items() if k != "model"}
    assert config == dict(name="pp", inner_lr=0.05, inner_steps=3, first_order=False,
                          steps_per_epoch=2, msl_epochs=3, first_order_epochs=1)
    assert {k: v for k, v in loaded.get_config().items() if k != "model"} == config
    for a, b in zip(loaded.weights, learner.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.task_step.numpy()) == 3
    x = np.linspace(-1, 1, 5, dtype="float32")[:, None]
    np.testing.assert_allclose(loaded.adapt(x, np.sin(x), steps=4)(x, training=True),
                               learner.adapt(x, np.sin(x), steps=4)(x, training=True), rtol=1e-6)


@pytest.mark.parametrize("inner_lr, scale", [(None, 1.0), (0.2, 2.0)])
def test_adaptation_past_training_steps_reuses_the_last_steps_rates(inner_lr, scale):
    learner = km.MAMLPlusPlus(mlp(dtype="float64", hidden=8), inner_lr=0.1, inner_steps=2)
    spread(learner)
    learner.compile(loss="mse")
    learner._resolve_loss_and_metrics(None, None)
    sx, sy, _, _ = (v[0] for v in random_batch(tasks=1, shots=6, queries=6, dim=1, seed=6))
    rates = learner.learning_rates.numpy() * scale
    fast = [tf.constant(v.numpy()) for v in learner.model.trainable_variables]
    for row in [rates[0], rates[1], rates[1], rates[1]]:
        with tf.GradientTape() as tape:
            tape.watch(fast)
            y, _ = learner.model.stateless_call(fast, [], tf.constant(sx), training=True)
            loss = tf.reduce_mean(tf.square(y - sy))
        fast = [p - r * g for p, r, g in zip(fast, row, tape.gradient(loss, fast))]
    adapted = learner.adapt(sx, sy, steps=4, inner_lr=inner_lr)
    for got, want in zip(adapted.trainable_variables, fast, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


def test_adapted_model_export_is_served_by_plain_tensorflow(tmp_path):
    learner = bn_learner(inner_steps=3)
    learner.compile(loss="mse", jit_compile=False, vectorize=False)
    sx, sy, qx, _ = (v[0] for v in random_batch(tasks=1, shots=6, queries=6, dim=1, seed=7))
    adapted = learner.adapt(sx, sy, steps=2)
    adapted.export(str(tmp_path / "adapted"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "adapted"))
    np.testing.assert_allclose(served.serve(tf.constant(qx)).numpy(),
                               adapted(qx, training=False), rtol=1e-10)
    # The adapted model predicts as the learner does (transductive batch statistics; Keras
    # computes the batch variance by another formula than the exact one, hence rtol).
    meta = learner.meta_state()
    state = learner.adapt_states(meta, tf.constant(sx), tf.constant(sy), (2,), inner_lr=0.3)[0]
    np.testing.assert_allclose(adapted(qx, training=True),
                               learner.predict_adapted(meta, state, tf.constant(qx)), rtol=1e-6)
