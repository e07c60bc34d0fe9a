"""RL shapes that would be broadcast or reinterpreted are refused, and non-finite updates are skipped.

A policy body with the wrong number of outputs used to train: a Gaussian body with fewer
units than `action_dim` had its means and log-std broadcast into a wrong-sized
distribution. A NaN in a PPO (MAML-RL, RL²) outer step was written into the weights; the
supervised learners' guard now skips it for every RL outer update as well.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium.vector import AutoresetMode

from keras_meta.rl import (MAMLRL, RL2, BernoulliBandit, CategoricalPolicy, GaussianPolicy, Navigation2D,
                           RL2Policy, RolloutBuffer)


def _body(inputs, units):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units)])


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: GaussianPolicy(_body(2, 1), action_dim=2), r"`body` to output 2 units.*Received: .*output shape \(1, 1\)"),
    (lambda: GaussianPolicy(_body(2, 3), action_dim=2), r"`body` to output 2 units"),
    (lambda: GaussianPolicy(_body(2, 3), action_dim=2, std_head=True),
     r"`body` to output 4 units \(2 means and 2 log-stds"),
    (lambda: CategoricalPolicy(_body(2, 3), num_actions=2), r"`body` to output 2 units.*output shape \(1, 3\)"),
])
def test_policy_body_with_the_wrong_width_is_refused_at_build(make, match):
    policy = make()
    with pytest.raises(ValueError, match=match):
        policy.build_for(2)
    assert not hasattr(policy, "observation_dim")  # learners build a policy that lacks it


def test_gaussian_policy_of_the_right_width_builds():
    policy = GaussianPolicy(_body(2, 4), action_dim=2, std_head=True).build_for(2)
    assert policy.dist_params(None, tf.zeros([3, 2])).shape == (3, 4)


def test_policy_refuses_observations_of_another_width():
    policy = GaussianPolicy(_body(2, 2), action_dim=2).build_for(2)
    with pytest.raises(ValueError, match=r"observations.*2 features.*Received: obs.shape=\(3, 1\)"):
        policy.dist_params(None, tf.zeros([3, 1]))


def test_maml_rl_refuses_a_policy_that_does_not_match_the_env():
    policy = GaussianPolicy(_body(2, 3), action_dim=3)
    with pytest.raises(ValueError, match=r"policy.*action_dim=3.*action_space=Box"):
        MAMLRL(policy, Navigation2D(horizon=5))
    assert not hasattr(policy, "observation_dim")  # refused before the policy was built for the env
    built_for_three = GaussianPolicy(_body(3, 2), action_dim=2).build_for(3)
    with pytest.raises(ValueError, match=r"observation_dim=3.*observation_space=Box"):
        MAMLRL(built_for_three, Navigation2D(horizon=5))
    with pytest.raises(ValueError, match=r"discrete.*num_actions=2"):
        MAMLRL(CategoricalPolicy(_body(2, 2), num_actions=2), Navigation2D(horizon=5))


def test_rl2_refuses_a_continuous_policy_of_another_action_dim():
    with pytest.raises(ValueError, match=r"action_dim=3"):
        RL2(RL2Policy(2, action_dim=3, units=4), Navigation2D(horizon=5))


def test_rl2_policy_step_refuses_inputs_of_another_width():
    policy = RL2Policy(1, num_actions=2, units=4, input_scale=(1, 1, 1, 1))
    # A [B, 1] input used to broadcast against the per-feature input scale.
    with pytest.raises(ValueError, match=r"`x` to have 5 features.*Received: x.shape=\(3, 1\)"):
        policy.step(tf.zeros([3, 1]), policy.get_initial_state(3))
    with pytest.raises(ValueError, match=r"`state` to have 4 units.*Received: state.shape=\(3, 5\)"):
        policy.step(tf.zeros([3, 5]), tf.zeros([3, 5]))


def test_buffer_refuses_a_final_observation_of_another_shape():
    buffer = RolloutBuffer(1, 2, 4, (3,), (2,), autoreset_mode=AutoresetMode.SAME_STEP)
    step = dict(observations=np.zeros((2, 3), np.float32), actions=np.zeros((2, 2), np.float32),
                rewards=np.zeros(2, np.float32), terminated=np.array([True, False]), truncated=np.zeros(2, bool),
                next_observations=np.zeros((2, 3), np.float32))
    # A one-element final observation used to be broadcast over the row's three features.
    infos = {"final_obs": np.array([np.float32(7.0), None], object), "_final_obs": np.array([True, False])}
    with pytest.raises(ValueError, match=r"final_obs.*shape \(3,\).*Received: .*shape=\(\)"):
        buffer.add(**step, infos=infos)
    assert len(buffer) == 0


def test_mujoco_task_env_refuses_tasks_of_another_shape():
    pytest.importorskip("mujoco")
    from keras_meta.rl import HalfCheetahVel

    env = HalfCheetahVel(horizon=5)
    before = env.get_task()
    with pytest.raises(ValueError, match=r"task\['velocity'\] to be a finite number.*Received: velocity=\[1.0, 2.0\]"):
        env.set_task({"velocity": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"`task` to hold 'velocity'.*Received: task=\{'direction': 1.0\}"):
        env.set_task({"direction": 1.0})
    assert env.get_task() == before
    env.close()


# --- non-finite outer updates ------------------------------------------------------------------


def _poison_outer_advantages(learner, every):
    """Makes every `every`-th processed batch (the outer, post-update one) NaN."""
    process, calls = learner.process, [0]

    def poisoned(buffer):
        batch = process(buffer)
        calls[0] += 1
        if calls[0] % every:
            return batch
        return batch._replace(advantages=tf.fill(tf.shape(batch.advantages), float("nan")))

    learner.process = poisoned


def _state(learner):
    opt = learner.optimizer
    return ([v.numpy().copy() for v in learner.policy.weights],
            None if opt is None else [v.numpy().copy() for v in opt.variables])


def _assert_state_kept(learner, before):
    weights, opt = _state(learner)
    for a, b in zip(weights, before[0], strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
    if opt is not None:
        for a, b in zip(opt, before[1], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("outer", ["ppo", "trpo"])
def test_maml_rl_skips_a_non_finite_outer_update(outer):
    policy = GaussianPolicy(keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"),
                                              keras.layers.Dense(2)]), 2)
    learner = MAMLRL(policy, Navigation2D(horizon=5), outer=outer, ppo_epochs=2, seed=1)
    before = _state(learner)
    _poison_outer_advantages(learner, every=2)  # inner_steps=1: inner batch, then the outer one
    logs = learner.train_step(learner.iteration_tasks(0, 2), episodes_per_task=2)
    _assert_state_kept(learner, before)
    assert not np.isfinite(logs["loss" if outer == "ppo" else "surrogate_before"])
    assert learner.iteration == 1  # the iteration ran; only its update was skipped


def test_rl2_skips_a_non_finite_ppo_update():
    learner = RL2(None, BernoulliBandit(2), episodes_per_trial=2, units=4, ppo_epochs=2, minibatches=2, seed=0)
    before = _state(learner)
    _poison_outer_advantages(learner, every=1)
    logs = learner.train_step(learner.iteration_tasks(0, 4))
    _assert_state_kept(learner, before)
    assert np.isnan(logs["loss"])
    # The finite weights still train on finite data.
    learner.process = type(learner).process.__get__(learner)
    learner.train_step(learner.iteration_tasks(1, 4))
    assert any(not np.array_equal(a, b) for a, b in zip(_state(learner)[0], before[0]))
