"""Meta-gradients against independent references: closed forms and finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch
from keras_meta.training import MetaState

from learner_table import MODES, mlp


def linear_model(dim, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,), dtype="float64"),
                             keras.layers.Dense(1, dtype="float64")])


def random_batch(tasks, shots, queries, dim, seed):
    rng = np.random.default_rng(seed)
    sx, qx = rng.normal(size=(tasks, shots, dim)), rng.normal(size=(tasks, queries, dim))
    w = rng.normal(size=(tasks, dim, 1))
    return TaskBatch(sx, sx @ w + 0.1 * rng.normal(size=(tasks, shots, 1)),
                     qx, qx @ w + 0.1 * rng.normal(size=(tasks, queries, 1)))


def closed_form_maml_gradient(theta, batch, alpha, first_order):
    """One-step MAML meta-gradient of mean-squared error for y = [x, 1] @ theta."""
    def augment(x):
        return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], -1)

    grads = []
    for sx, sy, qx, qy in zip(*batch):
        xs, xq = augment(sx), augment(qx)
        a_s = 2.0 / len(xs) * xs.T @ xs
        inner_grad = 2.0 / len(xs) * xs.T @ (xs @ theta - sy)
        fast = theta - alpha * inner_grad
        g_query = 2.0 / len(xq) * xq.T @ (xq @ fast - qy)
        grads.append(g_query if first_order else (np.eye(len(theta)) - alpha * a_s) @ g_query)
    return np.mean(grads, axis=0)


def meta_gradient(learner, batch, mode="function"):
    """The learner's meta-gradient for `batch`, as one flat float64 vector."""
    learner.compile(loss="mse", **MODES[mode])
    learner._resolve_loss_and_metrics(None, None)
    learner._resolve_execution()
    batch = TaskBatch(*(tf.constant(v) for v in batch))
    grads = learner._meta_gradient_fn()(batch)[0]
    return np.concatenate([np.ravel(g) for g in grads])


def query_objective(learner, batch, flat):
    """mean_i L_query(adapt(theta)) at flat meta-weights (inner gradients exact first order)."""
    variables = learner.meta_variables()
    saved = [v.numpy() for v in variables]
    offset = 0
    for v in variables:
        size = int(np.prod(v.shape))
        v.assign(flat[offset:offset + size].reshape(v.shape))
        offset += size
    batch_t = TaskBatch(*(tf.constant(v) for v in batch))
    loss = float(learner._meta_gradients(batch_t)[1])
    for v, s in zip(variables, saved):
        v.assign(s)
    return loss


def flat_weights(learner):
    return np.concatenate([np.ravel(v.numpy()) for v in learner.meta_variables()])


def directional_check(learner, batch, directions=4, eps=1e-5, seed=0):
    """(autodiff directional derivatives, central finite differences) along random directions."""
    grad = meta_gradient(learner, batch)
    theta = flat_weights(learner)
    rng = np.random.default_rng(seed)
    auto, numeric = [], []
    for _ in range(directions):
        v = rng.normal(size=theta.shape)
        auto.append(grad @ v)
        numeric.append((query_objective(learner, batch, theta + eps * v)
                        - query_objective(learner, batch, theta - eps * v)) / (2 * eps))
    return np.array(auto), np.array(numeric)


@pytest.mark.parametrize("first_order", [False, True])
def test_one_step_maml_matches_closed_form_for_linear_regression(first_order):
    model = linear_model(3)
    maml = km.MAML(model, inner_lr=0.1, inner_steps=1, first_order=first_order)
    batch = random_batch(tasks=4, shots=5, queries=7, dim=3, seed=1)
    kernel, bias = (v.numpy() for v in model.trainable_variables)
    theta = np.concatenate([kernel, bias[:, None]])
    expected = closed_form_maml_gradient(theta, batch, 0.1, first_order).ravel()
    np.testing.assert_allclose(meta_gradient(maml, batch), expected, rtol=1e-10, atol=1e-12)


def test_second_and_first_order_differ_for_linear_regression():
    batch = random_batch(tasks=4, shots=5, queries=7, dim=3, seed=1)
    second = meta_gradient(km.MAML(linear_model(3), inner_lr=0.1), batch)
    first = meta_gradient(km.FOMAML(linear_model(3), inner_lr=0.1), batch)
    assert np.abs(second - first).max() > 1e-3


def test_two_step_maml_mlp_matches_finite_differences():
    maml = km.MAML(mlp(dtype="float64", hidden=8), inner_lr=0.1, inner_steps=2)
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=2)
    auto, numeric = directional_check(maml, batch)
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-8)


def test_second_order_through_batch_normalization_matches_finite_differences():
    maml = km.MAML(mlp(dtype="float64", hidden=8, batch_norm=True), inner_lr=0.3, inner_steps=2)
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=3)
    auto, numeric = directional_check(maml, batch)
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "function"])
def test_batch_normalization_meta_gradient_is_the_same_in_every_mode(mode):
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=3)

    def gradient(mode):
        maml = km.MAML(mlp(dtype="float64", hidden=8, batch_norm=True), inner_lr=0.3, inner_steps=2)
        return meta_gradient(maml, batch, mode)

    np.testing.assert_allclose(gradient(mode), gradient("function"), rtol=1e-9, atol=1e-12)


def test_keras_batch_statistics_alone_give_wrong_second_order_gradients():
    """The trap DESIGN §5 describes is real: without exact moments the check above fails."""
    maml = km.MAML(mlp(dtype="float64", hidden=8, batch_norm=True), inner_lr=0.3, inner_steps=2)
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=3)
    maml.compile(loss="mse", jit_compile=False, vectorize=False)
    maml._resolve_loss_and_metrics(None, None)
    maml._resolve_execution()
    trapped = maml._meta_gradients_loop(TaskBatch(*(tf.constant(v) for v in batch)))[0]
    trapped = np.concatenate([np.ravel(g) for g in trapped])
    exact = meta_gradient(maml, batch)
    assert np.abs(trapped - exact).max() > 1e-4


def test_meta_sgd_learning_rate_gradient_matches_finite_differences():
    learner = km.MetaSGD(mlp(dtype="float64", hidden=8), inner_lr=0.1)
    batch = random_batch(tasks=3, shots=6, queries=6, dim=1, seed=4)
    grad = meta_gradient(learner, batch)
    theta = flat_weights(learner)
    n_model = sum(int(np.prod(v.shape)) for v in learner.model.trainable_variables)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = np.zeros_like(theta)
        v[n_model:] = rng.normal(size=theta.size - n_model)  # perturb the learning rates only
        numeric = (query_objective(learner, batch, theta + 1e-5 * v)
                   - query_objective(learner, batch, theta - 1e-5 * v)) / 2e-5
        np.testing.assert_allclose(grad @ v, numeric, rtol=1e-6, atol=1e-9)
    assert np.abs(grad[n_model:]).max() > 1e-4


def test_reptile_update_matches_the_rule():
    model = linear_model(2)
    reptile = km.Reptile(model, inner_lr=0.1, inner_steps=3)
    epsilon = 0.5
    reptile.compile(optimizer=keras.optimizers.SGD(epsilon), loss="mse")
    batch = random_batch(tasks=4, shots=5, queries=5, dim=2, seed=5)
    kernel, bias = (v.numpy() for v in model.trainable_variables)
    theta = np.concatenate([kernel, bias[:, None]])
    adapted = []
    for sx, sy, _, _ in zip(*batch):
        xs = np.concatenate([sx, np.ones((len(sx), 1))], -1)
        phi = theta.copy()
        for _ in range(3):
            phi = phi - 0.1 * 2.0 / len(xs) * xs.T @ (xs @ phi - sy)
        adapted.append(phi)
    expected = theta + epsilon * (np.mean(adapted, axis=0) - theta)
    reptile.fit(batch, meta_batch_size=4, epochs=1, verbose=0)
    got = np.concatenate([v.numpy() for v in model.trainable_variables[:1]]
                         + [model.trainable_variables[1].numpy()[:, None]])
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_anil_inner_loop_adapts_only_the_head():
    learner = km.ANIL(mlp(), inner_lr=0.1, inner_steps=3)
    learner.compile(loss="mse")
    learner._resolve_loss_and_metrics(None, None)
    batch = random_batch(tasks=1, shots=5, queries=5, dim=1, seed=6)
    meta = [tf.convert_to_tensor(v) for v in learner.meta_variables()]
    fast = learner.adapt_task(MetaState(meta, [], []), tf.constant(batch.support_x[0], tf.float32),
                              tf.constant(batch.support_y[0], tf.float32), 3, 0.1, False).params
    head = learner.adapted_mask()
    assert head == [False, False, False, False, True, True]
    for is_head, before, after in zip(head, meta, fast):
        changed = not np.array_equal(before.numpy(), after.numpy())
        assert changed == is_head


def test_anil_outer_loop_updates_the_body():
    learner = km.ANIL(mlp(dtype="float64", hidden=8), inner_lr=0.1)
    batch = random_batch(tasks=2, shots=5, queries=5, dim=1, seed=7)
    grad = meta_gradient(learner, batch)
    body = sum(int(np.prod(v.shape)) for v in learner.model.trainable_variables[:4])
    assert np.abs(grad[:body]).max() > 1e-6
