"""Generated tasks: the TaskDistribution contract of GeneratedClasses and MixedTasks."""

import numpy as np

import keras_meta as km
from keras_meta.tasks.generated import ConditionalGAN, GeneratedClasses, MixedTasks


def _gan():
    # Untrained: the contract does not depend on what the generator learned.
    return ConditionalGAN(num_classes=4, noise_dim=4, code_dim=3, filters=4, seed=0)


def test_generated_classes_layout_and_determinism():
    tasks = GeneratedClasses(_gan(), ways=3, shots=2, queries=1)
    batch = tasks.sample(2, seed=5)
    assert [v.shape for v in batch] == [(2, 6, 28, 28, 1), (2, 6), (2, 3, 28, 28, 1), (2, 3)]
    assert batch.support_x.dtype == np.float32 and batch.support_y.dtype == np.int32
    assert 0.0 <= batch.support_x.min() and batch.support_x.max() <= 1.0
    for labels in batch.support_y:
        assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    again = tasks.sample(2, seed=5)
    for a, b in zip(batch, again):
        np.testing.assert_array_equal(a, b)
    other = tasks.sample(2, seed=6)
    assert not np.array_equal(batch.support_x, other.support_x)
    # The generator's weights are a function of the GAN's seed alone.
    same = GeneratedClasses(_gan(), ways=3, shots=2, queries=1).sample(2, seed=5)
    np.testing.assert_array_equal(same.support_x, batch.support_x)


def test_mixed_tasks_take_each_task_from_one_family():
    images = np.random.default_rng(0).integers(0, 256, (80, 28, 28), dtype=np.uint8)
    real = km.tasks.FewShotClassification(images, np.repeat(np.arange(8), 10), ways=3, shots=2, queries=1)
    generated = GeneratedClasses(_gan(), ways=3, shots=2, queries=1)
    mixed = MixedTasks(real, generated, fraction=0.5)
    batch = mixed.sample(8, seed=3)
    want_real, want_generated = real.sample(8, 3), generated.sample(8, 4)
    sources = []
    for t in range(8):
        if np.array_equal(batch.support_x[t], want_real.support_x[t]):
            sources.append("real")
            np.testing.assert_array_equal(batch.query_y[t], want_real.query_y[t])
        else:
            np.testing.assert_array_equal(batch.support_x[t], want_generated.support_x[t])
            sources.append("generated")
    assert set(sources) == {"real", "generated"}
    for a, b in zip(batch, mixed.sample(8, seed=3)):
        np.testing.assert_array_equal(a, b)


def test_gan_trains_a_few_steps():
    images = np.random.default_rng(1).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    gan = _gan()
    before = [gan.codes.numpy(), *gan.generator.get_weights(), *gan.discriminator.get_weights()]
    history = gan.fit(images, np.arange(16) % 4, steps=2, batch_size=4)
    assert len(history["d_loss"]) == 2 and np.all(np.isfinite(history["d_loss"] + history["g_loss"]))
    after = [gan.codes.numpy(), *gan.generator.get_weights(), *gan.discriminator.get_weights()]
    # Every weight learns, the class codes with the generator.
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
