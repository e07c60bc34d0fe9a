"""TF-op twins of the C++ regression samplers (keras_meta.tasks.graph, ops.philox).

Independent reference: the C++ sampler (`family.sample`, `_core.derive_seed`), compared
bit for bit on the float32 values, eagerly, in a graph and under XLA.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.ops import philox
from keras_meta.tasks.graph import graph_sampler

from graph_audit import HOST_CALLBACKS, op_types
from interruption import Interrupt
from learner_table import LEARNERS, mlp

FAMILIES = [
    km.tasks.Sinusoid(shots=5, queries=7),
    km.tasks.Linear(shots=3, queries=4, split="val"),
    km.tasks.Polynomial(shots=4, queries=5, degree=5, split="test"),
    km.tasks.StepFunction(shots=6, queries=2),
]
SEEDS = [0, 7, 2**32 - 1, 2**63 + 5, 2**64 - 1]


def same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("jit", [None, True], ids=["eager", "xla"])
def test_step_seeds_equal_the_core_derive_seed(jit):
    steps = tf.constant([0, 1, 99, 2**32 + 3, 2**62], tf.int64)
    for seed in SEEDS:
        derive = lambda s: philox.derive_seed(seed, s)  # noqa: E731
        if jit is not None:
            derive = tf.function(derive, jit_compile=jit)
        low, high = derive(steps)
        got = [(int(h) << 32) | int(lo) for lo, h in zip(low.numpy(), high.numpy())]
        assert got == [km.tasks.step_seed(seed, int(s)) for s in steps.numpy()]


@pytest.mark.parametrize("jit", [None, True], ids=["eager", "xla"])
def test_in_graph_sampler_equals_the_cpp_sampler_bit_for_bit(jit):
    # Graph mode without XLA is covered by the training tests below (jit_compile=False).
    sizes = (1, 25)

    def draw(low, high):  # every family and size in one function: one XLA compilation
        return [graph_sampler(f)(n, (low, high)) for f in FAMILIES for n in sizes]

    if jit is not None:
        draw = tf.function(draw, jit_compile=jit)
    for seed in SEEDS:
        got = draw(tf.constant(seed & 0xFFFFFFFF, tf.uint32), tf.constant(seed >> 32, tf.uint32))
        want = [f.sample(n, seed) for f in FAMILIES for n in sizes]
        for got_batch, want_batch in zip(got, want, strict=True):
            for g, w in zip(got_batch, want_batch, strict=True):
                same_bits(g.numpy(), w)


def test_families_without_a_twin_keep_the_host_sampler():
    class Subclass(km.tasks.Sinusoid):  # may override sample: never replaced
        pass

    images = np.zeros((20, 4, 4, 1), np.uint8)
    assert graph_sampler(Subclass()) is None
    assert graph_sampler(km.tasks.FewShotClassification(images, np.repeat(np.arange(4), 5),
                                                        ways=2, shots=1, queries=1)) is None
    # A range whose float32 width overflows cannot be reproduced by the twin's scaling.
    assert graph_sampler(km.tasks.Linear(slope=(-3e38, 3e38))) is None


class HostSinusoid(km.tasks.TaskDistribution):
    """The same tasks through the NumPy/C++ path (a family without a TF twin)."""

    loss = "mse"

    def __init__(self, inner):
        self.inner = inner

    def sample(self, meta_batch_size, seed):
        return self.inner.sample(meta_batch_size, seed)


TASKS = km.tasks.Sinusoid(shots=5, queries=5)


def fit(tasks, jit=False, spe=2, callbacks=(), epochs=2, steps=4):
    learner = LEARNERS["maml"](mlp(seed=3))
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=spe,
                    jit_compile=jit, vectorize=False)
    learner.fit(tasks, meta_batch_size=4, epochs=epochs, steps_per_epoch=steps, seed=11,
                verbose=0, callbacks=list(callbacks))
    return learner


def state(learner):
    return [v.numpy() for v in learner.weights] + [v.numpy() for v in learner.optimizer.variables]


def close(a, b):
    """Same tasks, same weights up to float32 rounding: the two train functions are
    different graphs, which TensorFlow's optimizer (and XLA, which compiles the graph
    sampler's whole call as one program) fuses differently (measured: 1-ulp differences
    after 8 steps). A different task would move them by orders of magnitude more."""
    for got, want in zip(state(a), state(b), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_graph_and_host_samplers_train_to_the_same_weights():
    graph, host = fit(TASKS), fit(HostSinusoid(TASKS))
    assert "TensorFlow ops" in graph.execution_summary
    assert "NumPy function" in host.execution_summary
    close(graph, host)
    xla = fit(TASKS, jit=True)
    assert "one XLA program per call of 2 meta-step(s)" in xla.execution_summary
    close(xla, host)
    # One program with no host round trip; the check can fail: the host path's train
    # function calls the NumPy sampler.
    types = op_types(xla._steps_program.get_concrete_function())
    assert not types & HOST_CALLBACKS, types & HOST_CALLBACKS
    assert types_of_train_function(host) & HOST_CALLBACKS
    # The draw is computed once into buffers, not fused into the products that read it
    # (which would recompute it per output element; GraphSampler.sample_step).
    assert "XlaOptimizationBarrier" in types
    # The comparison can fail: other tasks (another run seed) give other weights.
    other = LEARNERS["maml"](mlp(seed=3))
    other.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=2,
                  jit_compile=False, vectorize=False)
    other.fit(TASKS, meta_batch_size=4, epochs=2, steps_per_epoch=4, seed=12, verbose=0)
    with pytest.raises(AssertionError):
        close(other, host)


def types_of_train_function(learner):
    iterator = iter(tf.data.Dataset.from_tensors(tf.zeros((1,), tf.int32)).repeat())
    return op_types(learner._sampled_steps_function().get_concrete_function(iterator))


@pytest.mark.parametrize("first, then", [
    ("host", "graph"), pytest.param("graph", "host", marks=pytest.mark.slow)])
def test_a_resumed_run_continues_the_task_sequence_with_either_sampler(first, then, tmp_path):
    source = {"graph": TASKS, "host": HostSinusoid(TASKS)}
    reference = fit(source["host"], spe=1, epochs=3, steps=2)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1)
    with pytest.raises(KeyboardInterrupt):
        fit(source[first], spe=1, epochs=3, steps=2, callbacks=[backup, Interrupt(3)])
    resumed = fit(source[then], spe=1, epochs=3, steps=2, callbacks=[backup])
    assert int(resumed.task_step.numpy()) == 6
    close(resumed, reference)
