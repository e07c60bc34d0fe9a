"""The first fit/evaluate/adapt trace each function once, and later calls reuse it.

Counted with `tf.function.experimental_get_tracing_count` (not timed): a retrace would
repeat the trace (and the XLA compilation) that dominates a first call.
"""

import keras
import numpy as np

import keras_meta as km

from learner_table import LEARNERS, mlp


def test_fit_evaluate_and_adapt_trace_each_function_once():
    tasks = km.tasks.Sinusoid(shots=5, queries=5)
    learner = LEARNERS["maml"](mlp(seed=1))
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=2)
    for _ in range(2):  # two epochs, then a second fit of the same run
        learner.fit(tasks, meta_batch_size=4, epochs=2, steps_per_epoch=4, seed=0, verbose=0,
                    validation_tasks=km.tasks.Sinusoid(shots=5, queries=5, split="val"),
                    validation_batches=2)
    assert learner._steps_program.experimental_get_tracing_count() == 1
    batch = km.tasks.Sinusoid(shots=5, queries=5, split="test").sample(2, 0)
    for seed in (0, 1):  # other tasks of the same shapes reuse the traces
        learner.evaluate(tasks, steps=[0, 1], meta_batch_size=2, num_batches=1, seed=seed)
        learner.adapt(batch.support_x[seed], batch.support_y[seed], steps=1)
    counts = learner._functions.tracing_counts()
    assert counts and all(c == 1 for c in counts.values()), counts
    # The count moves on a retrace: other shapes (another support size) trace again.
    learner.adapt(np.zeros((3, 1), np.float32), np.zeros((3, 1), np.float32), steps=1)
    assert max(learner._functions.tracing_counts().values()) == 2
