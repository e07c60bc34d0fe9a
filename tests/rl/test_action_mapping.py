"""The policy-to-env action mapping shared by the RL learners (`RLLearner.env_actions`)."""

import keras
import numpy as np
import pytest

from keras_meta.rl import MAMLRL, RL2, GaussianPolicy, Navigation2D, RL2Policy, meta_evaluate_episodes


def _maml_rl_buffer(env, rescale_actions):
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    learner = MAMLRL(GaussianPolicy(body, 2, log_std_init=0.5), env, seed=1, rescale_actions=rescale_actions)
    tasks = env.sample_tasks(2, seed=0)
    return learner.collect(learner.stack_weights(learner.policy.weights_list(), 2), tasks, 3, seed=5)


def _rl2_buffer(env, rescale_actions):
    policy = RL2Policy(2, action_dim=2, units=4, log_std_init=0.5)
    learner = RL2(policy, env, episodes_per_trial=1, seed=1, rescale_actions=rescale_actions)
    return learner.collect(env.sample_tasks(2, seed=0), trials_per_task=3, seed=5)


@pytest.mark.parametrize("rescale_actions", [False, True])
@pytest.mark.parametrize("collect", [_maml_rl_buffer, _rl2_buffer], ids=["MAMLRL", "RL2"])
def test_collect_maps_policy_actions_onto_the_env_bounds(collect, rescale_actions):
    # max_action 0.2 also checks that the batched navigation keeps the env's own settings.
    d = collect(Navigation2D(horizon=4, max_action=0.2), rescale_actions).data()
    actions = d["actions"].astype(np.float64)
    assert np.abs(actions).max() > 1.0  # std e^0.5: some actions fall outside both ranges
    moved = d["next_observations"] - d["observations"]
    expected = 0.2 * np.clip(actions, -1.0, 1.0) if rescale_actions else np.clip(actions, -0.2, 0.2)
    np.testing.assert_allclose(moved, expected, atol=1e-6)


class _RecordingNavigation(Navigation2D):
    """Navigation2D that keeps each (observation, action) pair it is stepped with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.received = []

    def reset(self, **kwargs):
        self._obs, info = super().reset(**kwargs)
        return self._obs, info

    def step(self, action):
        self.received.append((np.array(self._obs), np.array(action)))
        self._obs, *rest = super().step(action)
        return (self._obs, *rest)


@pytest.mark.parametrize("rescale_actions", [False, True])
def test_meta_world_protocol_maps_maml_rl_actions_like_collection(rescale_actions):
    env = _RecordingNavigation(horizon=5, max_action=0.2)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="ones",
                                                                   bias_initializer="ones")])
    learner = MAMLRL(GaussianPolicy(body, 2), env, seed=1, rescale_actions=rescale_actions)
    meta_evaluate_episodes(learner, env, env.sample_tasks(2, seed=0), adaptation_episodes=(0,),
                           eval_episodes=1, deterministic=True)
    observations, actions = (np.stack(x) for x in zip(*env.received))
    means = learner.policy.mode(None, observations.astype(np.float32)).numpy().astype(np.float64)
    assert np.abs(means).max() > 1.0  # outside both ranges, so the mapping decides
    expected = 0.2 * np.clip(means, -1.0, 1.0) if rescale_actions else np.clip(means, -0.2, 0.2)
    np.testing.assert_allclose(actions, expected, atol=1e-6)
