"""The shared table of learners run through the generic tests."""

import keras
import numpy as np

import keras_meta as km


def _learner(cls, **defaults):
    return lambda model, **kwargs: cls(model, **{**defaults, **kwargs})


LEARNERS = {
    "maml": _learner(km.MAML, inner_lr=0.05, inner_steps=2),
    "fomaml": _learner(km.FOMAML, inner_lr=0.05, inner_steps=2),
    "meta_sgd": _learner(km.MetaSGD, inner_lr=0.05),
    "anil": _learner(km.ANIL, inner_lr=0.05, inner_steps=2),
    "reptile": _learner(km.Reptile, inner_lr=0.05, inner_steps=3),
    # Two steps per epoch: the generic 3-step fits cross the annealing of both schedules.
    "maml_pp": _learner(km.MAMLPlusPlus, inner_lr=0.05, inner_steps=2, steps_per_epoch=2,
                        msl_epochs=1, first_order_epochs=1),
    "meta_lstm": _learner(km.MetaLSTM, inner_lr=0.05, inner_steps=2),
}

MODES = {
    "eager": dict(run_eagerly=True, jit_compile=False, vectorize=False),
    "function": dict(jit_compile=False, vectorize=False),
    "xla": dict(jit_compile=True, vectorize=False),
    "vectorized": dict(jit_compile=False, vectorize=True),
    "xla_vectorized": dict(jit_compile=True, vectorize=True),
}


def mlp(seed=0, hidden=16, dtype="float32", batch_norm=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((1,), dtype=dtype), keras.layers.Dense(hidden, activation="tanh", dtype=dtype)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    layers += [keras.layers.Dense(hidden, activation="tanh", dtype=dtype), keras.layers.Dense(1, dtype=dtype)]
    return keras.Sequential(layers)


def weights_of(learner):
    return [v.numpy() for v in learner.weights]


def reloaded(learner, directory):
    """`learner` saved to a `.keras` file in `directory` and loaded back, checked to be
    of the same class with the same weights."""
    path = directory / "learner.keras"
    learner.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(learner)
    for a, b in zip(weights_of(restored), weights_of(learner), strict=True):
        np.testing.assert_array_equal(a, b)
    return restored


def assert_modes_agree(results, untrained_weights):
    """Each mode's weights and loss history equal the task loop's ("function"), and
    training moved the weights away from `untrained_weights`."""
    reference, reference_history = results["function"]
    for mode, (learner, history) in results.items():
        for a, b in zip(weights_of(learner), weights_of(reference)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=mode)
        np.testing.assert_allclose(history.history["loss"], reference_history.history["loss"],
                                   rtol=1e-4, err_msg=mode)
    assert any(not np.array_equal(a, b)
               for a, b in zip(weights_of(reference), untrained_weights))



# --- model-based learners (classification episodes read as sequences) --------------------------


class GaussianPrototypes(km.tasks.TaskDistribution):
    """Episodes of `ways` classes, each a random Gaussian prototype in R^dim; examples are
    prototype + noise, support and query sets shuffled, labels ids 0..ways-1 (int32)."""

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics = ("accuracy",)

    def __init__(self, ways=3, shots=2, queries=2, dim=4, noise=0.3):
        self.ways, self.shots, self.queries, self.dim, self.noise = ways, shots, queries, dim, noise

    def sample(self, meta_batch_size, seed):
        rng = np.random.default_rng(seed)
        prototypes = rng.normal(size=(meta_batch_size, self.ways, self.dim))

        def examples(per_class):
            y = np.stack([rng.permutation(np.repeat(np.arange(self.ways), per_class))
                          for _ in range(meta_batch_size)])
            x = np.take_along_axis(prototypes, y[..., None], 1)
            x = x + self.noise * rng.normal(size=x.shape)
            return x.astype(np.float32), y.astype(np.int32)

        return km.tasks.TaskBatch(*examples(self.shots), *examples(self.queries))


def dense_embedding(seed=0, dim=4, units=6, dtype="float32"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,), dtype=dtype),
                             keras.layers.Dense(units, activation="tanh", dtype=dtype)])


SEQUENCE_LEARNERS = {
    "mann": _learner(km.MANN, num_classes=3, memory_slots=6, memory_size=4, controller_units=5,
                     read_heads=2),
    "snail": _learner(km.SNAIL, num_classes=3, shots=2, blocks=[("attention", 4, 3), ("tc", 3)]),
}
