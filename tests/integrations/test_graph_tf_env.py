"""`GraphTFEnvironment`: an in-graph task env as a TF-Agents TFEnvironment.

Checked against TF-Agents' own Python path over the host twin (`TFPyEnvironment` of a
`BatchedPyEnvironment` of `GymnasiumPyEnvironment`s): the same time steps for the same
actions. Driven by TF-Agents' dynamic step/episode drivers, with TF-Agents' metrics and
replay buffer as observers, and a traced driver run is GPU-ready (no Python, GPU kernels).
"""

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("tf_agents") is None:  # importing it here would bypass the bridge's env setup
    pytest.skip("needs the tf-agents extra", allow_module_level=True)

from keras_meta.integrations import tf_agents as kmtfa  # noqa: E402

import tensorflow as tf  # noqa: E402
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver  # noqa: E402
from tf_agents.environments import batched_py_environment, tf_py_environment  # noqa: E402
from tf_agents.metrics import tf_metrics  # noqa: E402
from tf_agents.policies import random_tf_policy  # noqa: E402
from tf_agents.replay_buffers import tf_uniform_replay_buffer  # noqa: E402
from tf_agents.utils import nest_utils  # noqa: E402

from graph_audit import HOST_CALLBACKS, op_types, without_gpu_kernel  # noqa: E402
from keras_meta.rl import GraphBernoulliBandit, GraphNavigation2D, GraphPointMass2D  # noqa: E402

T, E = 2, 3


def _python_twin(graph_env, tasks):
    """TF-Agents' Python path over the host twin, one py env per batch entry (task-major)."""
    def make(task):
        host = graph_env.host_env()
        host.set_task(task)
        return kmtfa.GymnasiumPyEnvironment(host)
    envs = [make(tasks[i // E]) for i in range(T * E)]
    return tf_py_environment.TFPyEnvironment(batched_py_environment.BatchedPyEnvironment(envs, multithreading=False))


@pytest.mark.parametrize("name", ["navigation", "bandit"])
def test_time_steps_equal_tf_agents_python_path(name):
    if name == "navigation":
        graph_env = GraphNavigation2D(horizon=5)
        tasks = graph_env.host_env().sample_tasks(T, seed=2)
    else:
        graph_env = GraphBernoulliBandit(3)
        tasks = [{"probs": np.array([1.0, 0.0, 1.0])}, {"probs": np.array([0.0, 1.0, 1.0])}]
    env = kmtfa.GraphTFEnvironment(graph_env, graph_env.encode_tasks(tasks), E)
    twin = _python_twin(graph_env, tasks)
    assert env.time_step_spec() == twin.time_step_spec() and env.action_spec() == twin.action_spec()
    rng = np.random.default_rng(0)
    got, want = env.reset(), twin.reset()
    step_types, last_discounts = set(), set()
    for _ in range(14):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6)
        assert nest_utils.is_batched_nested_tensors(got, env.time_step_spec())
        step_types |= set(want.step_type.numpy().tolist())
        last_discounts |= set(want.discount.numpy()[want.step_type.numpy() == 2].tolist())
        if name == "navigation":
            # Half the entries head for their goal (termination), half wander (truncation).
            goals = np.stack([tasks[i // E]["goal"] for i in range(T * E)])
            action = rng.uniform(-0.1, 0.1, (T * E, 2)).astype(np.float32)
            action[::2] = goals[::2] - want.observation.numpy()[::2]
        else:
            action = rng.integers(0, 3, T * E)
        got, want = env.step(tf.constant(action)), twin.step(tf.constant(action))
    # FIRST, (MID,) LAST; episodes ended by termination (discount 0) and truncation (1).
    assert step_types == ({0, 1, 2} if name == "navigation" else {0, 2})
    assert last_discounts == ({0.0, 1.0} if name == "navigation" else {0.0})


def test_drivers_run_graph_env_with_tf_agents_observers():
    graph_env = GraphPointMass2D(horizon=5)  # no early termination: every episode is 5 steps
    env = kmtfa.GraphTFEnvironment(graph_env, graph_env.sample_tasks(T, seed=0), E)
    policy = random_tf_policy.RandomTFPolicy(env.time_step_spec(), env.action_spec())
    episodes, steps = tf_metrics.NumberOfEpisodes(), tf_metrics.EnvironmentSteps()
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(policy.trajectory_spec, env.batch_size, max_length=20)
    dynamic_episode_driver.DynamicEpisodeDriver(env, policy, [episodes, steps, buffer.add_batch],
                                                num_episodes=T * E).run()
    assert int(episodes.result()) == T * E and int(steps.result()) == 5 * T * E
    traj = buffer.gather_all()
    np.testing.assert_array_equal(traj.step_type.numpy()[:, 0], 0)
    np.testing.assert_array_equal(traj.step_type.numpy()[:, 5], 2)
    # The step driver continues from the LAST steps: its first step resets every entry (a
    # boundary, which neither it nor EnvironmentSteps counts), 5 steps end the second
    # episodes, a reset, then 2 steps of the third: 7 counted steps per entry.
    dynamic_step_driver.DynamicStepDriver(env, policy, [episodes, steps], num_steps=7 * T * E).run()
    assert int(episodes.result()) == 2 * T * E and int(steps.result()) == 5 * T * E + 7 * T * E
    assert env.current_time_step().step_type.numpy().tolist() == [1] * T * E


def test_set_tasks_resets_and_changes_rewards():
    graph_env = GraphNavigation2D(horizon=4)
    env = kmtfa.GraphTFEnvironment(graph_env, [[0.3, 0.0], [0.0, 0.3]], 1)
    env.step(tf.constant([[0.1, 0.0], [0.1, 0.0]]))
    first = env.set_tasks([[-0.3, 0.0], [0.0, -0.3]])
    np.testing.assert_array_equal(first.step_type.numpy(), [0, 0])
    np.testing.assert_array_equal(first.observation.numpy(), 0)
    reward = env.step(tf.constant([[0.1, 0.0], [0.1, 0.0]])).reward.numpy()
    np.testing.assert_allclose(reward, [-0.4, -np.hypot(0.1, 0.3)], rtol=1e-6)
    np.testing.assert_array_equal(env.tasks.numpy(), np.float32([[-0.3, 0.0], [0.0, -0.3]]))


def test_traced_driver_run_is_gpu_ready():
    graph_env = GraphNavigation2D(horizon=5)
    env = kmtfa.GraphTFEnvironment(graph_env, graph_env.sample_tasks(T, seed=0), E)
    policy = random_tf_policy.RandomTFPolicy(env.time_step_spec(), env.action_spec())
    driver = dynamic_step_driver.DynamicStepDriver(env, policy, num_steps=20)
    # The driver builds its own tf.while_loop: no autograph needed (converting TF-Agents
    # and TFP code with it takes ~30 s).
    traced = tf.function(driver.run, autograph=False)
    types = op_types(traced.get_concrete_function())
    assert "StatelessWhile" in types or "While" in types
    assert not types & HOST_CALLBACKS
    assert without_gpu_kernel(types) == []
