"""The compiled MAML-RL meta-iteration over an in-graph env (keras_meta.rl.graph_iteration):
the host path's numbers on the same tasks and seeds, a graph without Python callbacks whose
every op has a GPU kernel, and (slow) a short run that learns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from graph_audit import HOST_CALLBACKS, op_types, without_gpu_kernel
from keras_meta.rl import MAMLRL, GaussianPolicy, Navigation2D
from keras_meta.rl import graph_iteration as gi
from keras_meta.rl.graph_envs import GraphNavigation2D

H, T, E = 6, 2, 3


def _learner(seed=3, **kwargs):
    keras.utils.set_random_seed(seed)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    return MAMLRL(GaussianPolicy(body, 2), Navigation2D(horizon=H), seed=seed, rescale_actions=True, **kwargs)


def _masked_equal(a, b, masks, **tolerance):
    m = masks.reshape(masks.shape + (1,) * (a.ndim - 3))
    np.testing.assert_allclose(a * m, b * m, **tolerance)


@pytest.fixture(scope="module")
def host_and_graph():
    """A host meta-iteration (train_step) and the graph one on the same tasks and seeds."""
    host, graph = _learner(), _learner()
    env = GraphNavigation2D(horizon=H)
    tasks = host.iteration_tasks(0, T)
    # The host's collection seeds of iteration 0 (_rollout samples step h with [seed mod (2^31 - 1), h]).
    seeds = [host._seed(0, 1, 0) % (2**31 - 1), host._seed(0, 2) % (2**31 - 1)]
    host_logs = host.train_step(tasks, E)
    step = tf.function(lambda t, s: gi.meta_iteration(graph, env, t, s, E))
    graph_logs = step(tf.constant(env.encode_tasks(tasks)), [tf.constant(s, tf.int64) for s in seeds])
    return host, graph, host_logs, graph_logs, step, tasks, seeds


def test_collect_and_process_equal_the_host_path():
    learner, env = _learner(), GraphNavigation2D(horizon=H)
    tasks = learner.env.sample_tasks(T, seed=0)
    stacked = learner.stack_weights(learner.policy.weights_list(), T)
    buffer = learner.collect(stacked, tasks, E, seed=11)
    host = learner.process(buffer)

    @tf.function
    def graph(stacked, tasks):
        rollout = gi.collect(learner, env, stacked, tasks, E, tf.constant(11, tf.int64))
        return rollout, gi.process(learner, rollout), gi.episode_returns(rollout)

    rollout, batch, returns = graph(stacked, tf.constant(env.encode_tasks(tasks)))
    d = buffer.data()
    np.testing.assert_array_equal(rollout.masks.numpy(), d["masks"])
    assert d["terminated"].any() or d["masks"].all()
    for name in ("observations", "next_observations", "actions", "rewards", "terminated", "truncated"):
        _masked_equal(getattr(rollout, name).numpy(), d[name], d["masks"], rtol=0, atol=0)
    _masked_equal(rollout.steps.numpy(), d["episode_steps"], d["masks"], rtol=0, atol=0)
    np.testing.assert_allclose(returns.numpy(), buffer.episode_returns(), rtol=1e-6)
    # Baseline, GAE (TF twin of the C++ recursion) and the per-task normalisation.
    np.testing.assert_allclose(batch.advantages.numpy(), host.advantages.numpy(), atol=1e-5)
    assert float(tf.reduce_max(tf.abs(batch.advantages))) > 0.5


def test_meta_iteration_equals_the_host_train_step(host_and_graph):
    host, graph, host_logs, graph_logs, *_ = host_and_graph
    assert host_logs["line_search_steps"] > 0  # a step was taken, so the weights moved
    for key in ("pre_return", "post_return", "surrogate_before", "surrogate_after", "kl", "line_search_steps"):
        assert float(graph_logs[key]) == pytest.approx(host_logs[key], rel=1e-3, abs=1e-6), key
    # The outer step, compared as a whole: float32 differences of ~1e-6 in the advantages
    # (C++ vs TF recursion) pass through the conjugate-gradient solve into every weight.
    start = np.concatenate([w.ravel() for w in _learner().policy.get_weights()])
    host_step = np.concatenate([w.ravel() for w in host.policy.get_weights()]) - start
    graph_step = np.concatenate([w.ravel() for w in graph.policy.get_weights()]) - start
    assert np.linalg.norm(host_step) > 1e-3
    assert np.linalg.norm(graph_step - host_step) < 5e-3 * np.linalg.norm(host_step)


def test_compiled_iteration_has_no_python_and_only_gpu_kernels(host_and_graph):
    *_, step, tasks, seeds = host_and_graph
    env = GraphNavigation2D(horizon=H)
    types = op_types(step.get_concrete_function(tf.constant(env.encode_tasks(tasks)),
                                                [tf.constant(s, tf.int64) for s in seeds]))
    assert {"While", "StatelessWhile"} & types  # loop bodies (collection, CG, line search) were inspected
    assert not types & HOST_CALLBACKS
    assert without_gpu_kernel(types) == []


def test_graph_meta_iteration_advances_the_counter_on_its_device():
    learner = _learner(seed=5)
    iteration = gi.GraphMetaIteration(learner, GraphNavigation2D(horizon=H), T, E, device="/CPU:0")
    before = [w.copy() for w in learner.policy.get_weights()]
    logs = iteration()
    assert learner.iteration == 1 and np.isfinite(list(logs.values())).all()
    assert any(not np.allclose(a, b) for a, b in zip(before, learner.policy.get_weights()))
    graph = iteration.function.get_concrete_function().graph
    devices = {op.device for op in graph.get_operations() if op.device}
    assert devices and all(d.endswith("CPU:0") for d in devices)
    with pytest.raises(ValueError, match="Expected a NEXT_STEP graph env with horizon 6"):
        gi.GraphMetaIteration(learner, GraphNavigation2D(horizon=H + 1), T, E)


@pytest.mark.slow
def test_in_graph_training_improves_post_adaptation_return_on_held_out_goals():
    learner = _learner(seed=0)
    env = GraphNavigation2D(horizon=H)
    iteration = gi.GraphMetaIteration(learner, env, 10, 10)
    held_out = learner.env.sample_tasks(10, seed=999)
    before = learner.meta_evaluate(held_out, steps=[1], episodes=10, seed=1)[1]
    for _ in range(30):
        iteration()
    after = learner.meta_evaluate(held_out, steps=[1], episodes=10, seed=1)[1]
    assert after > before + 0.1 * abs(before)
