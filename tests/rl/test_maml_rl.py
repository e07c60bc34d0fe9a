import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta.rl import MAMLRL, GaussianPolicy, Navigation2D
from keras_meta.rl.maml_rl import Batch


def _learner(dtype="float32", **kwargs):
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh", dtype=dtype),
                             keras.layers.Dense(2, dtype=dtype)])
    policy = GaussianPolicy(body, 2, dtype=dtype)
    return MAMLRL(policy, Navigation2D(horizon=10), seed=3, **kwargs)


def _fixed_batch(seed, dtype, T=2, E=3, H=5):
    rng = np.random.default_rng(seed)
    masks = np.ones((T, E, H))
    masks[0, 0, 3:] = 0
    cast = lambda a: tf.constant(a, dtype)
    return Batch(cast(rng.normal(size=(T, E, H, 2))), cast(rng.normal(scale=0.3, size=(T, E, H, 2))),
                 cast(rng.normal(size=(T, E, H))), cast(masks), tf.zeros((T, E, H), tf.int32))


def test_meta_gradient_matches_float64_finite_differences():
    learner = _learner("float64", inner_lr=0.5)
    inner_batch, outer = _fixed_batch(0, tf.float64), _fixed_batch(1, tf.float64)
    theta = learner.policy.weights_list()
    old_dist = learner._dist_all(learner.stack_weights([w + 0.05 for w in theta], 2), outer.observations)
    _, _, grads = learner._surrogate_grad(theta, [inner_batch], outer, old_dist)
    surrogate = lambda params: learner._outer_terms(params, [inner_batch], outer, old_dist)[0].numpy()
    rng = np.random.default_rng(2)
    for _ in range(3):
        direction = [tf.constant(rng.normal(size=w.shape)) for w in theta]
        eps = 1e-6
        plus = surrogate([w + eps * d for w, d in zip(theta, direction)])
        minus = surrogate([w - eps * d for w, d in zip(theta, direction)])
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
        assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-9)
    # The second-order terms matter here: the first-order meta-gradient differs.
    first = _learner("float64", inner_lr=0.5, first_order=True)
    for src, dst in zip(learner.policy.trainable_variables, first.policy.trainable_variables):
        dst.assign(src)
    _, _, fo = first._surrogate_grad(theta, [inner_batch], outer, old_dist)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads, fo)) > 1e-4


def _kl_grad(learner, theta, batches, outer, old_dist):
    with tf.GradientTape() as tape:
        tape.watch(theta)
        kl = learner._outer_terms(theta, batches, outer, old_dist)[1]
    return tape.gradient(kl, theta)


def _every(batch, k):
    return Batch(*(x[:, :, ::k] for x in batch))


def test_fisher_vector_product_equals_finite_differences_of_the_kl_gradient():
    # At theta the sampling policy is the adapted one (old = new), where the Gauss-Newton
    # product is the KL's exact Hessian: compare it with central differences of its gradient.
    learner = _learner("float64", inner_lr=0.5)
    inner_batch, outer = _fixed_batch(0, tf.float64), _fixed_batch(1, tf.float64)
    theta = learner.policy.weights_list()
    batches = [inner_batch]
    old_dist = learner._dist_all(learner._adapt_all(theta, batches), outer.observations)
    rng = np.random.default_rng(7)
    vector = [tf.constant(rng.normal(size=w.shape)) for w in theta]
    fvp = tf.function(learner._fvp)
    got = fvp(theta, vector, batches, outer, old_dist)
    eps = 1e-5
    plus = _kl_grad(learner, [w + eps * v for w, v in zip(theta, vector)], batches, outer, old_dist)
    minus = _kl_grad(learner, [w - eps * v for w, v in zip(theta, vector)], batches, outer, old_dist)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in got) > 1e-2
    for g, p, m in zip(got, plus, minus):
        np.testing.assert_allclose(g.numpy(), (p - m).numpy() / (2 * eps), rtol=1e-6, atol=1e-8)
    # Batched over tasks it is the mean of the one-task products (the per-task loop it replaced).
    one = lambda b, t: Batch(*(x[t:t + 1] for x in b))
    per_task = [fvp(theta, vector, [one(inner_batch, t)], one(outer, t), old_dist[t:t + 1]) for t in range(2)]
    for g, a, b in zip(got, *per_task):
        np.testing.assert_allclose(g.numpy(), (a + b).numpy() / 2, rtol=1e-10, atol=1e-13)
    # fvp_subsample=k is the product on every k-th step of every episode.
    learner.fvp_subsample = 2
    sub = tf.function(learner._fvp)(theta, vector, batches, outer, old_dist)
    learner.fvp_subsample = 1
    want = fvp(theta, vector, [_every(inner_batch, 2)], _every(outer, 2), old_dist[:, :, ::2])
    for a, b in zip(sub, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    assert any(not np.allclose(a, b) for a, b in zip(sub, got))


def test_trpo_step_lowers_surrogate_within_kl_bound():
    learner = _learner(max_kl=0.01)
    tasks = learner.env.sample_tasks(2, seed=0)
    theta = learner.policy.weights_list()
    batches = [learner.process(learner.collect(learner.stack_weights(theta, 2), tasks, 4, seed=1))]
    stacked = learner._adapt_all(theta, batches)
    outer = learner.process(learner.collect(stacked, tasks, 4, seed=2))
    old_dist = learner._dist_all(stacked, outer.observations)
    before, kl0 = learner._outer_terms(theta, batches, outer, old_dist)
    assert float(kl0) == pytest.approx(0.0, abs=1e-6)
    logs = learner.trpo_step(theta, batches, outer, old_dist)
    assert logs["line_search_steps"] > 0
    new_theta = learner.policy.weights_list()
    assert any(not np.allclose(a, b) for a, b in zip(theta, new_theta))
    after, kl = learner._outer_terms(new_theta, batches, outer, old_dist)
    assert float(after) < float(before)
    assert 0.0 < float(kl) <= 0.01 + 1e-6


def test_fit_history_callbacks_adapt_and_meta_evaluate():
    learner = _learner(outer="ppo", ppo_epochs=2)
    seen = []

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    history = learner.fit(epochs=2, meta_batch_size=2, episodes_per_task=3, callbacks=[Recorder()], verbose=0)
    assert isinstance(history, keras.callbacks.History)
    assert len(history.history["post_return"]) == 2 and seen[0] == "begin" and "kl" in seen[1]
    meta = [w.numpy() for w in learner.policy.weights_list()]
    task = learner.env.sample_tasks(1, seed=9)[0]
    adapted = learner.adapt(task=task, episodes=3, steps=1)
    assert isinstance(adapted, keras.Model)
    for w, m in zip(learner.policy.weights_list(), meta):
        np.testing.assert_array_equal(w, m)
    assert any(not np.allclose(a, m) for a, m in zip(adapted.weights_list(), meta))
    results = learner.meta_evaluate([task], steps=[0, 1], episodes=3)
    assert set(results) == {0, 1} and all(-1000 < v < 0 for v in results.values())
    # Same seed, same numbers: sampling is reproducible.
    assert learner.meta_evaluate([task], steps=[0, 1], episodes=3) == results


def test_rescale_actions_needs_finite_continuous_bounds():
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="finite bounds for `rescale_actions=True`. Received: action_space="):
        MAMLRL(GaussianPolicy(body, 2), _UnboundedNavigation(), rescale_actions=True)


class _UnboundedNavigation(Navigation2D):
    def __init__(self):
        super().__init__(horizon=4)
        self.action_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)


def test_per_step_adaptation_step_sizes():
    learner = _learner()
    task = learner.env.sample_tasks(1, seed=4)[0]
    default = learner.meta_evaluate([task], steps=[0, 1, 2], episodes=3)
    # Equal sizes reproduce the default; the first step's size decides step 1 alone.
    assert learner.meta_evaluate([task], steps=[0, 1, 2], episodes=3, inner_lrs=[0.1, 0.1]) == default
    halved = learner.meta_evaluate([task], steps=[0, 1, 2], episodes=3, inner_lrs=[0.1, 0.05])
    assert halved[1] == default[1] and halved[2] != default[2]
    theta = learner.policy.weights_list()
    one = learner.adapt(task=task, episodes=3, steps=1, inner_lrs=[0.1]).weights_list()
    two = learner.adapt(task=task, episodes=3, steps=1, inner_lrs=[0.2]).weights_list()
    for w, a, b in zip(theta, one, two):  # one step: theta - alpha g, so the change doubles with alpha
        np.testing.assert_allclose(b - w, 2.0 * (a - w), rtol=1e-4, atol=1e-6)


def test_step_by_step_adaptation_equals_replaying_every_step_from_theta():
    learner = _learner("float64", inner_lr=0.3)
    theta = learner.policy.weights_list()
    batches = [_fixed_batch(seed, tf.float64) for seed in range(3)]
    stacked = learner.stack_weights(theta, 2)
    for k, batch in enumerate(batches):
        stacked = learner._adapt_step_fn(stacked, batch, tf.constant(0.3, tf.float64))
        for a, b in zip(stacked, learner._adapt_all(theta, batches[:k + 1])):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    assert any(not np.allclose(a[0], w) for a, w in zip(stacked, theta))
    # The step size is a tensor and the weights come in, so every step reuses one trace.
    assert learner._adapt_step_fn.experimental_get_tracing_count() == 1


def test_evaluation_and_adaptation_trace_once_for_any_number_of_steps():
    learner = _learner()
    tasks = learner.env.sample_tasks(2, seed=4)
    learner.meta_evaluate(tasks, steps=[0, 1, 2, 3], episodes=2, inner_lrs=[0.1, 0.05, 0.05])
    learner.meta_evaluate(tasks, steps=[0, 2], episodes=2)
    assert learner._adapt_step_fn.experimental_get_tracing_count() == 1
    learner.adapt(task=tasks[0], episodes=2, steps=3)  # one task: a second input shape
    assert learner._adapt_step_fn.experimental_get_tracing_count() == 2


@pytest.mark.parametrize("inner_lrs", [[0.1], [0.1, 0.0], [0.1, float("nan")], "fast"])
def test_bad_step_sizes_raise_before_sampling(inner_lrs):
    learner = _learner()
    with pytest.raises(ValueError, match="Expected `inner_lrs` to hold at least 2 positive step sizes"):
        learner.meta_evaluate(learner.env.sample_tasks(1, seed=0), steps=[0, 2], inner_lrs=inner_lrs)
    with pytest.raises(ValueError, match="Received: inner_lrs="):
        learner.adapt(task=learner.env.sample_tasks(1, seed=0)[0], steps=2, inner_lrs=inner_lrs)
