"""Exact resume: an interrupted fit resumed with BackupAndRestore equals an uninterrupted one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km

from interruption import Interrupt
from learner_table import LEARNERS, mlp

TASKS = km.tasks.Sinusoid(shots=5, queries=5)

# Bit-for-bit claims are made under op determinism (it cannot be switched off again).
tf.config.experimental.enable_op_determinism()


def state(learner):
    """Meta-weights (with Meta-SGD rates and the task counter) and optimizer state."""
    return [v.numpy() for v in learner.weights] + [v.numpy() for v in learner.optimizer.variables]


def run(name, callbacks=(), epochs=3, steps=5, spe_exec=1):
    learner = LEARNERS[name](mlp(seed=3))
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=spe_exec)
    learner.fit(TASKS, meta_batch_size=4, epochs=epochs, steps_per_epoch=steps, seed=11,
                verbose=0, callbacks=list(callbacks))
    return learner


@pytest.mark.parametrize("name, interrupt_at, save_freq", [
    ("maml", 7, 1), ("maml", 8, 2), ("maml", 10, "epoch"), ("meta_sgd", 8, 2), ("reptile", 7, 1),
])
def test_interrupted_run_resumes_bit_for_bit(name, interrupt_at, save_freq, tmp_path):
    reference = run(name)
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        run(name, [keras.callbacks.BackupAndRestore(backup, save_freq=save_freq),
                   Interrupt(interrupt_at)])
    resumed = run(name, [keras.callbacks.BackupAndRestore(backup, save_freq=save_freq)])
    assert int(resumed.task_step.numpy()) == int(reference.task_step.numpy()) == 15
    for got, want in zip(state(resumed), state(reference), strict=True):
        np.testing.assert_array_equal(got, want)


def test_resume_with_steps_per_execution(tmp_path):
    reference = run("maml", epochs=2, steps=6, spe_exec=2)
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        run("maml", [keras.callbacks.BackupAndRestore(backup, save_freq=2), Interrupt(5)],
            epochs=2, steps=6, spe_exec=2)
    resumed = run("maml", [keras.callbacks.BackupAndRestore(backup, save_freq=2)],
                  epochs=2, steps=6, spe_exec=2)
    assert int(resumed.task_step.numpy()) == 12
    for got, want in zip(state(resumed), state(reference), strict=True):
        np.testing.assert_array_equal(got, want)


POOL = TASKS.sample(10, 5)


def run_pool(callbacks=()):
    learner = LEARNERS["maml"](mlp(seed=3))
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    learner.fit(POOL, meta_batch_size=4, epochs=3, steps_per_epoch=3, seed=11, verbose=0,
                callbacks=list(callbacks))
    return learner


def test_a_task_pool_resumes_bit_for_bit(tmp_path):
    # Pools were shuffled by a tf.data pipeline that a restart re-seeded from its start.
    reference = run_pool()
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        run_pool([keras.callbacks.BackupAndRestore(backup, save_freq=1), Interrupt(5)])
    resumed = run_pool([keras.callbacks.BackupAndRestore(backup, save_freq=1)])
    assert int(resumed.task_step.numpy()) == 9
    for got, want in zip(state(resumed), state(reference), strict=True):
        np.testing.assert_array_equal(got, want)


def test_pool_meta_batches_are_a_function_of_seed_and_step():
    from keras_meta.training import sources

    draw = sources.pool_draw(POOL, 4, seed=11)
    again = sources.pool_draw(POOL, 4, seed=11)
    for step in (0, 1, 2, 5):
        np.testing.assert_array_equal(draw(step).support_x, again(step).support_x)
    # Each pass of 2 meta-batches holds 8 distinct tasks, in a new order every pass.
    seen = [np.concatenate([draw(2 * p).query_y, draw(2 * p + 1).query_y]) for p in range(3)]
    for batch in seen:
        assert len({row.tobytes() for row in batch}) == 8
    assert not np.array_equal(seen[0], seen[1])


def test_a_dataset_source_refuses_to_resume_rather_than_drift(tmp_path):
    dataset = tf.data.Dataset.from_tensors(TASKS.sample(4, 0)).repeat()
    backup = str(tmp_path / "backup")

    def fit(callbacks):
        learner = LEARNERS["maml"](mlp(seed=3))
        learner.compile(loss="mse")
        learner.fit(dataset, epochs=2, steps_per_epoch=3, verbose=0, callbacks=callbacks)
        return learner

    with pytest.raises(KeyboardInterrupt):
        fit([keras.callbacks.BackupAndRestore(backup, save_freq=1), Interrupt(4)])
    learner = LEARNERS["maml"](mlp(seed=3))
    learner.compile(loss="mse")
    before = [v.numpy() for v in learner.weights]
    with pytest.raises(ValueError, match=r"Expected a TaskDistribution or a TaskBatch pool to "
                                         r"resume .* Received: tasks of type tf.data.Dataset"):
        learner.fit(dataset, epochs=2, steps_per_epoch=3, verbose=0,
                    callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=1)])
    for got, want in zip(learner.weights, before):
        np.testing.assert_array_equal(got.numpy(), want)
