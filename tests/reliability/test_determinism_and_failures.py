"""Determinism per learner, and what a diverging inner loop does."""

import keras
import numpy as np
import pytest

import keras_meta as km

from learner_table import LEARNERS, MODES, mlp, weights_of

TASKS = km.tasks.Sinusoid(shots=5, queries=5)


def run(name, seed, init_seed=0, **kwargs):
    learner = LEARNERS[name](mlp(seed=init_seed), **kwargs)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = learner.fit(TASKS, meta_batch_size=4, epochs=2, steps_per_epoch=3, seed=seed,
                          verbose=0)
    return learner, history.history


@pytest.mark.parametrize("name", LEARNERS)
def test_same_seed_same_run_different_seed_different_run(name):
    a, history_a = run(name, seed=5)
    b, history_b = run(name, seed=5)
    c, history_c = run(name, seed=6)
    assert history_a == history_b
    for x, y in zip(weights_of(a), weights_of(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert history_a != history_c
    assert any(not np.array_equal(x, y) for x, y in zip(weights_of(a), weights_of(c)))


@pytest.mark.parametrize("mode", MODES)
def test_diverging_inner_loop_shows_nan_and_keeps_weights_finite(tmp_path, mode):
    learner = km.MAML(mlp(), inner_lr=1e12, inner_steps=3)
    learner.compile(**MODES[mode])
    before = weights_of(learner)
    checkpoint = tmp_path / "last.keras"
    history = learner.fit(
        TASKS, meta_batch_size=4, epochs=3, steps_per_epoch=2, verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN(), keras.callbacks.ModelCheckpoint(str(checkpoint))],
    )
    assert not np.isfinite(history.history["loss"][-1])
    assert len(history.history["loss"]) == 1  # stopped in the first epoch
    for x, y in zip(weights_of(learner), before):
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y)
    restored = keras.saving.load_model(checkpoint)
    assert all(np.isfinite(w).all() for w in restored.model.get_weights())
