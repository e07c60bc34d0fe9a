import re

import gymnasium
import numpy as np
import pytest

from keras_meta import _core
from keras_meta.rl import BatchedNavigation2D, HalfCheetahDir, HalfCheetahVel, Navigation2D, check_task_env


def test_batched_navigation_equals_twin_and_python_env():
    n = 5
    native, numpy_twin = BatchedNavigation2D(n, horizon=30), BatchedNavigation2D(n, horizon=30, backend="numpy")
    tasks = native.sample_tasks(n, seed=3)
    tasks[0] = {"goal": np.array([0.05, -0.05], np.float32)}  # reachable: exercises termination
    native.set_tasks(tasks)
    numpy_twin.set_tasks(tasks)
    envs = [Navigation2D(horizon=30) for _ in range(n)]
    for env, task in zip(envs, tasks):
        env.set_task(task)
        env.reset(seed=0)
    np.testing.assert_array_equal(native.reset()[0], numpy_twin.reset()[0])
    rng = np.random.default_rng(0)
    pending = np.zeros(n, bool)
    saw_term = saw_trunc = False
    for step in range(70):
        actions = rng.normal(scale=0.15, size=(n, 2)).astype(np.float32)
        actions[0] = [0.05, -0.05] if step == 0 else [0.0, 0.0]
        a = native.step(actions)
        b = numpy_twin.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        for i, env in enumerate(envs):
            if pending[i]:  # NEXT_STEP autoreset: this step is the reset
                np.testing.assert_array_equal(a[0][i], env.reset()[0])
                assert a[1][i] == 0 and not a[2][i] and not a[3][i]
                pending[i] = False
                continue
            obs, reward, term, trunc, _ = env.step(actions[i])
            np.testing.assert_array_equal(a[0][i], obs)
            assert np.float32(reward) == a[1][i] and term == a[2][i] and trunc == a[3][i]
            pending[i] = term or trunc
            saw_term |= term
            saw_trunc |= trunc
    assert saw_term and saw_trunc


def test_sample_tasks_is_pure_and_in_range():
    env = Navigation2D()
    a, b = env.sample_tasks(50, seed=7), env.sample_tasks(50, seed=7)
    assert all(np.array_equal(x["goal"], y["goal"]) for x, y in zip(a, b))
    goals = np.stack([t["goal"] for t in a])
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert not np.array_equal(goals, np.stack([t["goal"] for t in env.sample_tasks(50, seed=8)]))
    env.set_task(a[3])
    np.testing.assert_array_equal(env.get_task()["goal"], a[3]["goal"])


def test_navigation_reward_and_clipping():
    env = Navigation2D()
    env.set_task({"goal": np.array([0.3, 0.4], np.float32)})
    env.reset()
    obs, reward, term, trunc, _ = env.step(np.array([5.0, -5.0]))
    np.testing.assert_allclose(obs, [0.1, -0.1])
    assert reward == pytest.approx(-np.hypot(0.2, 0.5), rel=1e-6)


def test_half_cheetah_rewards_are_replaced():
    pytest.importorskip("mujoco")
    vel, direction = HalfCheetahVel(horizon=5), HalfCheetahDir(horizon=5)
    vel.set_task({"velocity": 1.5})
    direction.set_task({"direction": -1.0})
    for env in (vel, direction):
        env.reset(seed=0)
    action = np.full(6, 0.5)
    _, r_vel, _, _, info = vel.step(action)
    assert r_vel == pytest.approx(-abs(info["x_velocity"] - 1.5) - 0.05 * 6 * 0.25)
    _, r_dir, _, trunc, info = direction.step(action)
    assert r_dir == pytest.approx(-info["x_velocity"] - 0.05 * 6 * 0.25)
    for _ in range(4):
        *_, trunc, _ = direction.step(action)
    assert trunc
    tasks = direction.sample_tasks(20, seed=0)
    assert {t["direction"] for t in tasks} == {-1.0, 1.0}


def test_env_without_task_interface_is_rejected():
    with pytest.raises(TypeError, match="Expected `env` to implement the task interface.*Received: env of type"):
        check_task_env(gymnasium.make("CartPole-v1"))


# Same element count as (3, 2), so a reshape would silently hand sub-env i another one's action.
_MISSHAPED_ACTIONS = [(2, 3), (6,), (1, 6), (3, 2, 1), (3, 1, 2), (6, 1)]


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("shape", _MISSHAPED_ACTIONS)
def test_batched_navigation_refuses_actions_not_shaped_num_envs_by_2(backend, shape):
    venv = BatchedNavigation2D(3, backend=backend)
    venv.set_tasks(venv.sample_tasks(3, seed=0))
    venv.reset()
    with pytest.raises(ValueError, match=rf"Expected `actions` to have shape \(3, 2\)\. Received: actions\.shape="
                                         rf"{re.escape(str(shape))}"):
        venv.step(np.zeros(shape, np.float64))
    # Refused before anything moved: the next valid step starts from the origin.
    obs = venv.step(np.full((3, 2), 0.05))[0]
    np.testing.assert_array_equal(obs, np.full((3, 2), 0.05, np.float32))


@pytest.mark.parametrize("shape", _MISSHAPED_ACTIONS + [(2, 2), (4, 2), (3,), ()])
def test_native_batched_navigation_refuses_misshaped_actions_and_goals(shape):
    nav = _core.BatchedNavigation(3)
    nav.reset()
    received = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    for method, name in ((nav.step, "actions"), (nav.set_goals, "goals")):
        with pytest.raises(ValueError, match=rf"Expected `{name}` to have shape \(3, 2\)\. Received: "
                                             rf"{name}\.shape={re.escape(received)}(?: with ndim={len(shape)})?$"):
            method(np.zeros(shape, np.float32))


def test_batched_navigation_refuses_goals_not_shaped_2():
    venv = BatchedNavigation2D(2)
    with pytest.raises(ValueError, match=r"Expected every task's `goal` to have shape \(2,\)"):
        venv.set_tasks([{"goal": [0.1, 0.2, 0.3]}] * 2)
