"""Issue 17 class 5: ordinary Keras models work, or are refused up front with a clear error."""

import keras
import numpy as np
import pytest

import keras_meta as km


class Sequences(km.tasks.TaskDistribution):
    """y = sum of a short sequence: a family for recurrent models."""

    loss = "mse"

    def sample(self, meta_batch_size, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(meta_batch_size, 10, 4, 2)).astype("float32")
        y = x.sum(axis=(2, 3))[..., None]
        return km.TaskBatch(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])


@pytest.mark.parametrize("layer", [keras.layers.GRU, keras.layers.LSTM])
def test_recurrent_models_train_in_the_default_mode(layer):
    # "auto" picked the vectorized path, where pfor cannot vectorize the RNN's while loop.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 2)), layer(6), keras.layers.Dense(1)])
    learner = km.MAML(model, inner_lr=0.05)
    learner.compile()
    history = learner.fit(Sequences(), meta_batch_size=4, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and not learner.vectorize
    with pytest.raises(ValueError, match=r"Expected vectorize=False or 'auto' for a model with "
                                         r"recurrent layers.*Received: vectorize=True"):
        learner.compile(vectorize=True)


class NoTrainingArgument(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def test_subclassed_model_whose_call_takes_no_training_argument():
    keras.utils.set_random_seed(0)
    model = NoTrainingArgument()
    model(np.zeros((1, 1), "float32"))  # builds its layers
    learner = km.MAML(model, inner_lr=0.05)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    tasks = km.tasks.Sinusoid(shots=5, queries=5)
    history = learner.fit(tasks, meta_batch_size=4, steps_per_epoch=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    batch = tasks.sample(1, seed=2)
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0])
    assert adapted(batch.query_x[0]).shape == (5, 1)


def test_multi_input_or_output_models_are_refused_up_front():
    a, b = keras.Input((1,)), keras.Input((1,))
    two_inputs = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    x = keras.Input((1,))
    two_outputs = keras.Model(x, [keras.layers.Dense(1)(x), keras.layers.Dense(1)(x)])
    for model, counts in ((two_inputs, "2 inputs and 1 outputs"), (two_outputs, "1 inputs and 2 outputs")):
        with pytest.raises(ValueError, match=r"Expected a model with one input and one output.*"
                                             + counts):
            km.MAML(model)


class Drifting(km.tasks.TaskDistribution):
    """A family whose shot count changes after the first draws, returning plain lists."""

    loss = "mse"

    def __init__(self, drift):
        self.drift = drift
        self.calls = 0

    def sample(self, meta_batch_size, seed):
        self.calls += 1
        shots = 5 if (self.calls < 3 or not self.drift) else 6
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(meta_batch_size, shots + 5, 1)).astype("float32")
        return [x[:, :shots], 2 * x[:, :shots], x[:, shots:], 2 * x[:, shots:]]


def test_task_family_returning_lists_works_and_shape_changes_are_named():
    keras.utils.set_random_seed(0)
    learner = km.MAML(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), inner_lr=0.05)
    learner.compile()
    learner.fit(Drifting(drift=False), meta_batch_size=2, steps_per_epoch=3, verbose=0)
    with pytest.raises(Exception, match=r"Expected every meta-batch to keep the shapes of the first: "
                                        r"support_x.shape=\(2, 5, 1\). Received: support_x.shape="
                                        r"\(2, 6, 1\)"):
        learner.fit(Drifting(drift=True), meta_batch_size=2, steps_per_epoch=3, verbose=0)
