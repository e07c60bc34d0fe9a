"""A fit that raises mid-iteration leaves the RL learner as it was, so a retry is a clean run."""

import keras
import numpy as np
import pytest

from keras_meta.rl import MAMLRL, RL2, BernoulliBandit, CategoricalPolicy


class FlakyBandit(BernoulliBandit):
    """A bandit whose first `failures[0]` steps, counted over it and all its clones, raise."""

    def __init__(self, num_arms=2, dependent=False, failures=None):
        super().__init__(num_arms, dependent)
        # One list shared by the clones the vector env is built from.
        self._config["failures"] = self.failures = [0] if failures is None else failures

    def step(self, action):
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise OSError("simulator not ready")
        return super().step(action)


def _maml_rl(env):
    keras.utils.set_random_seed(0)
    policy = CategoricalPolicy(keras.Sequential([keras.Input((1,)), keras.layers.Dense(2)]), 2)
    return MAMLRL(policy, env, outer="ppo", ppo_epochs=2, optimizer=keras.optimizers.Adam(0.05), seed=3)


def _rl2(env):
    keras.utils.set_random_seed(0)
    return RL2(None, env, episodes_per_trial=3, units=4, ppo_epochs=2, optimizer=keras.optimizers.Adam(0.05),
               seed=3)


def _fit(learner):
    """Fits two iterations, recording the tasks each one drew in `learner.drawn`."""
    draw = type(learner).iteration_tasks.__get__(learner)
    learner.drawn = []

    def recorded(iteration, n):
        tasks = draw(iteration, n)
        learner.drawn.append([t["probs"].tolist() for t in tasks])
        return tasks

    learner.iteration_tasks = recorded
    extra = {"episodes_per_task": 2} if isinstance(learner, MAMLRL) else {"trials_per_task": 1}
    learner.fit(epochs=1, steps_per_epoch=2, meta_batch_size=2, verbose=0, **extra)
    return learner


def _state(learner):
    optimizer = learner.training_state.optimizer
    return [v.numpy() for v in learner.training_state.weights] + [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("make", [_maml_rl, _rl2], ids=["maml_rl", "rl2"])
def test_fit_that_raised_is_retried_as_a_clean_run(make):
    clean = _fit(make(FlakyBandit()))
    flaky = make(FlakyBandit(failures=[1]))
    before = _state(flaky)
    with pytest.raises(RuntimeError, match="simulator not ready"):
        _fit(flaky)
    assert flaky.iteration == 0
    for got, want in zip(_state(flaky), before, strict=True):
        np.testing.assert_array_equal(got, want)
    _fit(flaky)
    assert flaky.iteration == clean.iteration == 2
    assert flaky.drawn == clean.drawn
    for got, want in zip(_state(flaky), _state(clean), strict=True):
        np.testing.assert_array_equal(got, want)
