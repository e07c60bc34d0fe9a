"""In-graph task environments against their host (gymnasium) twins, and their graphs.

Each graph env, given the host twin's tasks (`encode_tasks`) and the action sequence a
host policy chose, returns the same observations, rewards and flags step for step as a
gymnasium `SyncVectorEnv` of the host twin in the same autoreset mode (and navigation as
the C++ `BatchedNavigation2D`), eagerly, in a `tf.function` and compiled with XLA. The
traced rollout calls no Python and has a GPU kernel for every op (TF's kernel registry).
"""

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

from graph_audit import HOST_CALLBACKS, op_types, without_gpu_kernel
from keras_meta.rl import (BatchedNavigation2D, GraphBernoulliBandit, GraphNavigation2D, GraphPointMass2D,
                           Navigation2D)

T, E, STEPS = 3, 2, 14


def _bandit_tasks(env):
    # Probabilities 0 and 1 only: the host's coins (NumPy) and the graph's (Philox) differ.
    return [{"probs": np.array(p, float)} for p in ([1, 0, 1], [0, 1, 0], [1, 1, 0])]


FAMILIES = {
    # name: (make(autoreset_mode), host tasks(env))
    "navigation": (lambda mode: GraphNavigation2D(horizon=6, autoreset_mode=mode),
                   lambda env: env.host_env().sample_tasks(T, seed=4)),
    "bandit": (lambda mode: GraphBernoulliBandit(3, autoreset_mode=mode), _bandit_tasks),
    "point_mass": (lambda mode: GraphPointMass2D(horizon=5, autoreset_mode=mode),
                   lambda env: env.host_env().sample_tasks(T, seed=4)),
}
AUTORESET = ["NextStep", "SameStep"]


def _host_policy(name, rng, obs, tasks):
    """Actions a host policy picks: half of the navigation envs head straight for the goal
    (so episodes end by termination), the rest act at random, beyond the action bounds."""
    if name == "bandit":
        return rng.integers(0, 3, len(obs))
    actions = rng.uniform(-1.5, 1.5, (len(obs), 2)).astype(np.float32)
    if name == "navigation":
        goals = np.stack([tasks[i // E]["goal"] for i in range(len(obs))])
        actions[::2] = goals[::2] - obs[::2]
        actions[1::2] *= 0.15
    return actions


def host_rollout(name, mode, tasks, native=False):
    """`(actions, observations, rewards, terminated, truncated)` of the host twin, `[STEPS, T*E, ...]`."""
    env = FAMILIES[name][0](mode)
    if native:
        venv = BatchedNavigation2D(T * E, horizon=env.horizon)
        venv.set_tasks([tasks[i // E] for i in range(T * E)])
    else:
        def make(i):
            host = env.host_env()
            host.set_task(tasks[i // E])
            return host
        venv = gymnasium.vector.SyncVectorEnv([lambda i=i: make(i) for i in range(T * E)],
                                              autoreset_mode=gymnasium.vector.AutoresetMode(mode))
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(1)
    records = [[] for _ in range(6)]
    for _ in range(STEPS):
        action = _host_policy(name, rng, obs, tasks)
        obs, reward, terminated, truncated, infos = venv.step(action)
        final = obs.copy()
        if mode == "SameStep" and "final_obs" in infos:
            for i in np.flatnonzero(infos["_final_obs"]):
                final[i] = infos["final_obs"][i]
        for record, value in zip(records, (action, obs, reward, terminated, truncated, final)):
            record.append(value)
    venv.close()
    return [np.stack(r) for r in records]


def rollout(env, tasks, actions, seed):
    """A rollout of fixed actions `[steps, T, E, ...]`, the same code eager or traced."""
    state, obs = env.reset(tasks, E, seed)
    flags = tf.zeros(tf.shape(obs)[:2], tf.bool)

    def step(carry, action):
        state, obs, reward, terminated, truncated = env.step(carry[0], action)
        return state, obs, reward, terminated, truncated, state["final_observation"]

    init = (state, obs, tf.zeros(tf.shape(obs)[:2]), flags, flags, obs)
    return tf.scan(step, actions, initializer=init)[1:]


def _runner(execution, env):
    fn = lambda tasks, actions: rollout(env, tasks, actions, 0)  # noqa: E731
    if execution == "eager":
        return fn
    return tf.function(fn, jit_compile=execution == "xla")


@pytest.mark.parametrize("execution", ["eager", "function", "xla"])
@pytest.mark.parametrize("mode", AUTORESET)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_graph_env_equals_host_twin_step_for_step(name, mode, execution):
    env = FAMILIES[name][0](mode)
    tasks = FAMILIES[name][1](env)
    actions, *want = host_rollout(name, mode, tasks)
    graph_actions = actions.reshape(STEPS, T, E, *actions.shape[2:])
    got = _runner(execution, env)(tf.constant(env.encode_tasks(tasks)), tf.constant(graph_actions))
    got = [g.numpy().reshape(w.shape) for g, w in zip(got, want)]
    obs, reward, terminated, truncated, final = got
    # XLA may fuse a multiply-add into one rounding: float tolerance, flags exact.
    np.testing.assert_allclose(obs, want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reward, want[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(terminated, want[2])
    np.testing.assert_array_equal(truncated, want[3])
    np.testing.assert_allclose(final, want[4], rtol=1e-5, atol=1e-6)
    assert want[2].any() or name == "point_mass", "the episodes should end by termination too"
    assert want[3].any() or name == "bandit", "the episodes should end by truncation too"


def test_navigation_equals_native_batched_env():
    env = FAMILIES["navigation"][0]("NextStep")
    tasks = FAMILIES["navigation"][1](env)
    actions, *want = host_rollout("navigation", "NextStep", tasks, native=True)
    got = rollout(env, env.encode_tasks(tasks), actions.reshape(STEPS, T, E, 2), 0)
    for g, w in zip(got[:4], want[:4]):
        np.testing.assert_allclose(g.numpy().reshape(w.shape), w, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_traced_rollout_is_gpu_ready(name):
    env = FAMILIES[name][0]("NextStep")
    action = tf.TensorSpec([STEPS, T, E], tf.int32) if env.discrete else tf.TensorSpec([STEPS, T, E, 2])
    traced = tf.function(lambda tasks, actions, seed: rollout(env, tasks, actions, seed))
    types = op_types(traced.get_concrete_function(tf.TensorSpec([T, env.task_size]), action,
                                                  tf.TensorSpec([], tf.int64)))
    assert "StatelessWhile" in types or "While" in types  # the loop's body was inspected too
    assert not types & HOST_CALLBACKS
    assert without_gpu_kernel(types) == []


def test_audit_sees_a_python_callback():
    # The audit itself can fail: a numpy_function in a loop body is found.
    def body(x):
        return tf.ensure_shape(tf.numpy_function(np.sin, [x], tf.float32), [])

    traced = tf.function(lambda x: tf.scan(lambda c, v: body(v), x, initializer=tf.constant(0.0)))
    types = op_types(traced.get_concrete_function(tf.TensorSpec([3])))
    assert types & HOST_CALLBACKS == {"PyFunc"}
    assert without_gpu_kernel(types) == ["PyFunc"]


def test_bandit_coins_follow_the_arm_probabilities_and_the_seed():
    env = GraphBernoulliBandit(2, autoreset_mode="SameStep")
    tasks = tf.constant([[0.2, 0.9]])
    arms = tf.tile(tf.constant([[[0] * 200 + [1] * 200]]), [50, 1, 1])  # [steps, 1 task, 400 envs]

    def pulls(seed):
        state, obs = env.reset(tasks, 400, seed=seed)
        init = (state, obs, tf.zeros([1, 400]))
        return tf.scan(lambda carry, arm: env.step(carry[0], arm)[:3], arms, initializer=init)[2].numpy()

    rewards = pulls(7)
    # 10,000 pulls per arm: a binomial standard error of at most 0.005.
    np.testing.assert_allclose([rewards[..., :200].mean(), rewards[..., 200:].mean()], [0.2, 0.9], atol=0.025)
    np.testing.assert_array_equal(pulls(7), rewards)
    assert not np.array_equal(pulls(8), rewards)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sampled_tasks_follow_the_host_law(name):
    env = FAMILIES[name][0]("NextStep")
    graph = env.sample_tasks(2000, seed=3).numpy()
    host = env.encode_tasks(env.host_env().sample_tasks(2000, seed=3))
    assert graph.shape == host.shape
    np.testing.assert_allclose(graph.min(0), host.min(0), atol=0.01)
    np.testing.assert_allclose(graph.max(0), host.max(0), atol=0.01)
    np.testing.assert_allclose(graph.mean(0), host.mean(0), atol=0.05)
    np.testing.assert_array_equal(env.sample_tasks(5, seed=3).numpy(), env.sample_tasks(5, seed=3).numpy())
    # A traced seed gives the same tasks as the same Python seed.
    traced = tf.function(lambda s: env.sample_tasks(5, s))(tf.constant(3, tf.int64))
    np.testing.assert_array_equal(traced.numpy(), env.sample_tasks(5, seed=3).numpy())


def test_tasks_round_trip_through_host_dicts():
    env = GraphNavigation2D()
    tasks = Navigation2D().sample_tasks(4, seed=0)
    back = env.decode_tasks(env.encode_tasks(tasks))
    for a, b in zip(tasks, back):
        np.testing.assert_array_equal(a["goal"], b["goal"])
    mass = GraphPointMass2D()
    tasks = mass.host_env().sample_tasks(3, seed=0)
    assert mass.decode_tasks(mass.encode_tasks(tasks)) == [
        {k: float(np.float32(v)) for k, v in t.items()} for t in tasks]
