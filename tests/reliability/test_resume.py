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
