"""Learned optimizers: the unrolled training loss's gradient against float64 finite
differences, meta-training, the Keras optimizer against a NumPy twin and through `.keras`,
and the rule as a gradient learner's inner rule."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.optimizers import Learned, LearnedRule, Quadratics, meta_train, unrolled_loss

SMALL = dict(hidden_units=4, num_layers=1)


def random_weights(rule, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=w.shape) for w in rule.network]


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_unrolled_loss_gradient_matches_finite_differences(kind):
    rule = LearnedRule(kind=kind, **SMALL)
    problems = Quadratics(dim=3, dtype="float64")
    params, data = problems.sample(3)
    params = [tf.constant(p) for p in params]
    data = tuple(tf.constant(d) for d in data)
    weights = random_weights(rule, seed=1)

    def loss(values):
        return unrolled_loss(rule.update_rule([tf.constant(v) for v in values]), problems,
                             params, data, steps=3, second_order=True)[0]

    tensors = [tf.constant(w) for w in weights]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = unrolled_loss(rule.update_rule(tensors), problems, params, data, steps=3,
                              second_order=True)[0]
    grads = tape.gradient(value, tensors)
    rng = np.random.default_rng(0)
    for _ in range(3):
        direction = [rng.normal(size=w.shape) for w in weights]
        auto = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction))
        plus = loss([w + 1e-6 * d for w, d in zip(weights, direction)])
        minus = loss([w - 1e-6 * d for w, d in zip(weights, direction)])
        np.testing.assert_allclose(auto, float(plus - minus) / 2e-6, rtol=1e-5, atol=1e-8)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 1e-3


def held_out_loss(rule, problems, seeds=range(1000, 1008), steps=8):
    losses = []
    for seed in seeds:
        params, data = problems.sample(seed)
        losses.append(float(unrolled_loss(rule.update_rule(), problems,
                                          [tf.constant(p) for p in params],
                                          tuple(tf.constant(d) for d in data), steps)[0]))
    return float(np.mean(losses))


def test_meta_training_lowers_the_held_out_loss_and_repeats_with_the_seed():
    problems = Quadratics(dim=3)

    def trained(iterations):
        return meta_train(LearnedRule(**SMALL), problems, iterations=iterations,
                          meta_batch_size=2, horizon=8, unroll=4, seed=5,
                          optimizer=keras.optimizers.Adam(3e-2))

    untrained = held_out_loss(LearnedRule(**SMALL), problems)
    rule = trained(15)
    assert held_out_loss(rule, problems) < 0.7 * untrained
    again = trained(15)
    for a, b in zip(rule.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def sign_descent(step=0.01):
    """An MLP rule set by hand to `-step * sign(grad)` (for |grad| >= e^-10): a known
    descent rule, so the optimizer's mechanics are tested apart from meta-training."""
    rule = LearnedRule(kind="mlp", hidden_units=1, num_layers=1, output_scale=step)
    kernel = np.zeros((4, 1))
    kernel[1] = 20.0  # the sign feature of the gradient; tanh(20) = 1 to float32
    rule.set_weights([kernel, np.zeros(1), -np.ones((1, 1)), np.zeros(1)])
    return rule


def regression_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    return x, np.sin(x @ np.array([[1.0], [-0.5], [0.3]], "float32"))


def test_keras_optimizer_steps_match_a_numpy_twin_and_train_a_model():
    x, y = regression_data()
    model = regression_model()
    model.compile(optimizer=Learned(sign_descent(0.01), learning_rate=0.5), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    model.train_on_batch(x, y)
    for w, w0, g in zip(model.get_weights(), before, grads):
        np.testing.assert_allclose(w, w0 - 0.5 * 0.01 * np.sign(g.numpy()), rtol=1e-6,
                                   atol=1e-7)
    history = model.fit(x, y, batch_size=64, epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_model_compiled_with_the_learned_optimizer_round_trips_through_keras(tmp_path):
    rule = LearnedRule(**SMALL)
    rule.set_weights(random_weights(rule, seed=2, scale=0.3))
    x, y = regression_data()
    model = regression_model()
    model.compile(optimizer=Learned(rule, learning_rate=0.1), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(restored.optimizer, Learned)
    for a, b in zip(restored.optimizer.rule.get_weights(), rule.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The LSTM state travels too: one more epoch continues identically.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_rule_file_round_trip(tmp_path):
    rule = LearnedRule(kind="mlp", hidden_units=3, num_layers=2, output_scale=0.05, seed=4)
    rule.set_weights(random_weights(rule, seed=3))
    rule.save(tmp_path / "rule.npz")
    loaded = LearnedRule.from_file(tmp_path / "rule.npz")
    assert loaded.get_config() == rule.get_config()
    for a, b in zip(loaded.get_weights(), rule.get_weights()):
        np.testing.assert_array_equal(a, b)
    optimizer = Learned.from_file(tmp_path / "rule.npz", learning_rate=0.3)
    assert float(optimizer.learning_rate) == pytest.approx(0.3)
    for a, b in zip(optimizer.rule.get_weights(), rule.get_weights()):
        np.testing.assert_array_equal(a, b)


def fitted_maml(rule, tmp_path=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(1)])
    learner = km.MAML(model, inner_lr=1.0, inner_steps=2, inner_rule=rule)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False, vectorize=False)
    learner.fit(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=2, steps_per_epoch=2,
                verbose=0)
    return learner


def test_rule_as_the_inner_rule_of_maml(tmp_path):
    rule = sign_descent(0.05)
    before = rule.get_weights()
    learner = fitted_maml(rule)
    assert len(learner.meta_variables()) == len(learner.model.trainable_variables) + 4
    assert any(not np.array_equal(a, b) for a, b in zip(rule.get_weights(), before))
    # The inner loop applies the rule: one adaptation step is sign descent with the
    # rule's (meta-trained) weights, checked against the rule applied by hand.
    batch = km.tasks.Sinusoid(shots=5, split="test").sample(1, 0)
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0], steps=1)
    weights = [tf.constant(v.numpy()) for v in learner.model.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = tf.reduce_mean(tf.square(learner.model.stateless_call(
            weights, [], tf.constant(batch.support_x[0]))[0] - batch.support_y[0]))
    update = rule.update_rule()
    by_hand, _ = update.update(tape.gradient(loss, weights), update.init(weights), weights, 0)
    for a, b in zip(adapted.get_weights(), by_hand):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)
    learner.save(tmp_path / "maml.keras")
    restored = keras.saving.load_model(tmp_path / "maml.keras")
    for a, b in zip(restored.inner_rule.get_weights(), rule.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = restored.adapt(batch.support_x[0], batch.support_y[0], steps=1)
    for a, b in zip(again.get_weights(), adapted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_frozen_inner_rule_is_not_meta_learned():
    rule = sign_descent(0.05)
    rule.trainable = False
    keras.utils.set_random_seed(0)
    learner = km.MAML(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),
                      inner_rule=rule)
    # The outer optimizer updates meta_variables() only: the frozen rule is not among them,
    # and the inner loop reads the rule's own variables.
    assert learner.meta_variables() == learner.model.trainable_variables
    update = learner.update_rule(learner.meta_state(), learner.inner_lr)
    weights = [tf.constant([[0.3]]), tf.constant([-0.2])]
    new, _ = update.update([tf.constant([[2.0]]), tf.constant([-1e-3])], update.init(weights),
                           weights, 0)
    np.testing.assert_allclose([new[0].numpy()[0, 0], new[1].numpy()[0]], [0.25, -0.15],
                               rtol=1e-6)
