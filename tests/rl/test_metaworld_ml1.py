import numpy as np
import pytest

from keras_meta.rl import RL2, MetaWorldML1, meta_evaluate_episodes, metaworld_available

AVAILABLE, REASON = metaworld_available()
needs_metaworld = pytest.mark.skipif(not AVAILABLE, reason=f"Meta-World unavailable: {REASON}")


def test_missing_or_incompatible_metaworld_raises_a_clear_import_error():
    if AVAILABLE:
        pytest.skip("Meta-World is importable here")
    with pytest.raises(ImportError, match="metaworld"):
        MetaWorldML1("reach-v3")


@needs_metaworld
def test_ml1_reach_task_interface_and_protocol():
    env = MetaWorldML1("reach-v3", horizon=20)
    train = env.sample_tasks(3, seed=0)
    assert train == env.sample_tasks(3, seed=0) and all(t["split"] == "train" for t in train)
    env.set_task(train[0])
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape == (39,)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and "success" in info
    test_env = MetaWorldML1("reach-v3", split="test", horizon=20)
    learner = RL2(None, test_env, episodes_per_trial=2, units=8, seed=0)
    result = meta_evaluate_episodes(learner, test_env, test_env.sample_tasks(2, seed=1),
                                    adaptation_episodes=(0, 1), eval_episodes=1)
    assert set(result) == {0, 1}
    for row in result.values():
        assert 0.0 <= row["success_rate"] <= 1.0 and np.isfinite(row["return"])
        assert len(row["return_per_task"]) == 2


@needs_metaworld
def test_environments_and_clones_share_one_benchmark_build(monkeypatch):
    # Every sub-env of a vector env is a clone: rebuilding ML10 for each took most of a
    # MAML-RL run's time (benchmarks/RESULTS.md, Meta-World's own protocol).
    from keras_meta.rl import metaworld

    metaworld._benchmark.cache_clear()
    builds = []
    module = metaworld._import_metaworld()
    original = module.ML1
    monkeypatch.setattr(module, "ML1", lambda *a, **k: builds.append(a) or original(*a, **k))
    env = MetaWorldML1("reach-v3", horizon=20, seed=3)
    clones = [env.clone() for _ in range(3)]
    MetaWorldML1("reach-v3", split="test", horizon=20, seed=3)
    assert builds == [("reach-v3",)]
    # Shared tasks, separate skill environments: stepping one clone leaves the others.
    task = env.sample_tasks(1, seed=0)[0]
    for clone in clones:
        clone.set_task(task)
        clone.reset(seed=0)
    first = clones[0].step(np.ones(4, np.float32))[0]
    assert clones[0]._env is not clones[1]._env
    np.testing.assert_array_equal(clones[1].step(np.ones(4, np.float32))[0], first)
    MetaWorldML1("reach-v3", horizon=20, seed=4)
    assert builds == [("reach-v3",)] * 2
    metaworld._benchmark.cache_clear()


@pytest.mark.parametrize("kwargs, error", [
    ({"env_name": ["reach-v3"]}, TypeError), ({"seed": "0"}, TypeError), ({"seed": -1}, ValueError)])
def test_ml1_rejects_bad_arguments_before_building(kwargs, error):
    with pytest.raises(error, match="Expected .*Received"):
        MetaWorldML1(**kwargs)


def test_protocol_rejects_unknown_learners():
    from keras_meta.rl import BernoulliBandit

    with pytest.raises(TypeError, match=r"Expected `learner` to be a keras_meta RL learner \(with an "
                                        r"`evaluate_episodes` method.*Received: learner of type str"):
        meta_evaluate_episodes("maml", BernoulliBandit(2), [])


def test_protocol_asks_the_learner_to_evaluate_itself():
    """No learner-type switch: any learner with `evaluate_episodes` is measured by it."""
    from keras_meta.rl import BernoulliBandit

    class Learner:
        calls = []

        def evaluate_episodes(self, env, task, adaptation_episodes, eval_episodes, seed, deterministic):
            self.calls.append((adaptation_episodes, eval_episodes, seed, deterministic))
            return [float(adaptation_episodes)] * eval_episodes, [adaptation_episodes > 0] * eval_episodes

    env = BernoulliBandit(2)
    result = meta_evaluate_episodes(Learner(), env, env.sample_tasks(2, seed=0), adaptation_episodes=(0, 2),
                                    eval_episodes=3, seed=1, deterministic=True)
    assert result[0]["success_rate"] == 0.0 and result[2]["success_rate"] == 1.0
    assert result[2]["return_per_task"] == [2.0, 2.0]
    assert Learner.calls == [(0, 3, 100_003, True), (0, 3, 100_003 + 1_009, True),
                             (2, 3, 100_005, True), (2, 3, 100_005 + 1_009, True)]
