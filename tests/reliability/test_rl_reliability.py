"""The RL learners (MAMLRL, RL2): exact resume, determinism, and a failing environment."""

import functools
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta.rl import MAMLRL, RL2, BernoulliBandit, CategoricalPolicy, GaussianPolicy, Navigation2D

from interruption import Interrupt

# Bit-for-bit claims are made under op determinism (it cannot be switched off again).
tf.config.experimental.enable_op_determinism()

EPOCHS, STEPS = 2, 3


def _maml_rl(seed=3, env=None, **kwargs):
    keras.utils.set_random_seed(0)
    if env is None:
        body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"),
                                 keras.layers.Dense(2)])
        policy, env = GaussianPolicy(body, 2), Navigation2D(horizon=4)
    else:
        body = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2)])
        policy = CategoricalPolicy(body, 2)
    kwargs = {"outer": "ppo", "ppo_epochs": 2, **kwargs}
    if kwargs["outer"] == "ppo":
        # A large step makes every PPO iteration move the weights, so a lost step shows.
        kwargs["optimizer"] = keras.optimizers.Adam(0.05)
    return MAMLRL(policy, env, seed=seed, **kwargs)


def _rl2(seed=3, env=None):
    keras.utils.set_random_seed(0)
    return RL2(None, env or BernoulliBandit(2), episodes_per_trial=3, units=4, ppo_epochs=2,
               optimizer=keras.optimizers.Adam(0.05), seed=seed)


LEARNERS = {
    "maml_rl_ppo": _maml_rl,
    # Few conjugate-gradient and line-search steps keep TRPO quick; the state is the same.
    "maml_rl_trpo": functools.partial(_maml_rl, outer="trpo", cg_iters=2, ls_max_steps=3),
    "rl2": _rl2,
}


def fit(learner, callbacks=()):
    """A tiny fit; records the task seeds each iteration drew in `learner.task_seeds`."""
    sample_tasks = getattr(learner.env.sample_tasks, "__wrapped__", learner.env.sample_tasks)
    learner.task_seeds = []

    @functools.wraps(sample_tasks)
    def recorded(n, seed):
        learner.task_seeds.append(seed)
        return sample_tasks(n, seed)

    learner.env.sample_tasks = recorded
    extra = {"episodes_per_task": 2} if isinstance(learner, MAMLRL) else {"trials_per_task": 1}
    history = learner.fit(epochs=EPOCHS, steps_per_epoch=STEPS, meta_batch_size=2, callbacks=list(callbacks),
                          verbose=0, **extra)
    return learner, history.history


def state(learner):
    """Policy weights, iteration counters and optimizer state, as arrays."""
    optimizer = learner.training_state.optimizer
    return ([v.numpy() for v in learner.training_state.weights]
            + ([v.numpy() for v in optimizer.variables] if optimizer is not None else []))


@functools.cache
def reference(name):
    return fit(LEARNERS[name]())


@pytest.mark.parametrize("name, interrupts, save_freq", [
    ("maml_rl_ppo", [4], 1),         # mid-epoch: the resumed epoch leaves out its done steps
    ("maml_rl_ppo", [5], 2),         # the step after the last backup runs again
    ("maml_rl_trpo", [4], 1),        # no optimizer: the policy and the counter are the state
    ("rl2", [4], 1),
    ("rl2", [5], "epoch"),           # back to the end of the first epoch
    ("rl2", [2, 2], 1),              # interrupted twice, the second time after a resume
])
def test_interrupted_fit_resumes_bit_for_bit(name, interrupts, save_freq, tmp_path):
    reference_learner, _ = reference(name)
    backup = str(tmp_path / "backup")
    for at in interrupts:
        with pytest.raises(KeyboardInterrupt):
            fit(LEARNERS[name](), [keras.callbacks.BackupAndRestore(backup, save_freq=save_freq), Interrupt(at)])
    resumed, _ = fit(LEARNERS[name](), [keras.callbacks.BackupAndRestore(backup, save_freq=save_freq)])
    assert resumed.iteration == reference_learner.iteration == EPOCHS * STEPS
    # The resumed run drew exactly the tasks of the iterations the backup had not done.
    assert resumed.task_seeds == reference_learner.task_seeds[-len(resumed.task_seeds):]
    assert 0 < len(resumed.task_seeds) < EPOCHS * STEPS
    for got, want in zip(state(resumed), state(reference_learner), strict=True):
        np.testing.assert_array_equal(got, want)


def test_resume_without_backup_trains_from_scratch_and_fit_twice_continues(tmp_path):
    learner, _ = fit(_rl2(), [keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1)])
    assert learner.iteration == EPOCHS * STEPS
    # A second fit continues the task sequence; its epochs start from 0 again, as Keras's do.
    _, history = fit(learner)
    assert learner.iteration == 2 * EPOCHS * STEPS and len(history["loss"]) == EPOCHS
    assert learner.task_seeds == [learner._seed(i, 0) % (2**63) for i in range(EPOCHS * STEPS, 2 * EPOCHS * STEPS)]


@pytest.mark.parametrize("name", ["maml_rl_ppo", "rl2"])
def test_same_seed_same_run_different_seed_different_run(name):
    a, history_a = reference(name)
    b, history_b = fit(LEARNERS[name]())
    c, history_c = fit(LEARNERS[name](seed=4))
    assert history_a == history_b
    for x, y in zip(state(a), state(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert history_a != history_c
    assert any(not np.array_equal(x, y) for x, y in zip(state(a), state(c), strict=True))


class FaultyBandit(BernoulliBandit):
    """A bandit whose pull number `fail_at` (counted from a seeded reset) raises on task FAULTY."""

    FAULTY = (0.25, 0.75)

    def __init__(self, num_arms=2, dependent=False, fail_at=0):
        super().__init__(num_arms, dependent)
        self._config["fail_at"] = self.fail_at = fail_at
        self._pulls = 0

    def sample_tasks(self, n, seed):
        return [{"probs": np.array([0.5, 0.5])}] * (n - 1) + [{"probs": np.array(self.FAULTY)}]

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._pulls = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if tuple(self._probs) == self.FAULTY and self._pulls == self.fail_at:
            raise ValueError("sensor fault")
        self._pulls += 1
        return super().step(action)


@pytest.mark.parametrize("make, fail_at, where", [
    # MAML-RL collects one single-pull episode per sub-environment, two per task: the faulty
    # second task runs on sub-environments 2 and 3.
    (lambda env: _maml_rl(env=env), 0, "step 0 of episode 0 (sub-environment 2"),
    # An RL2 trial (one per task) is three single-pull episodes: the third pull is episode 2's
    # first step.
    (lambda env: _rl2(env=env), 2, "step 0 of episode 2 (sub-environment 1"),
], ids=["maml_rl", "rl2"])
def test_failing_env_step_names_task_episode_and_step(make, fail_at, where):
    learner = make(FaultyBandit(fail_at=fail_at))
    expected = (f"Expected the task environment to complete {where}, task={{'probs': array([0.25, 0.75])}}). "
                "Received: ValueError: sensor fault")
    with pytest.raises(RuntimeError, match=re.escape(expected)) as info:
        fit(learner)
    assert isinstance(info.value.__cause__, ValueError)
    assert learner.iteration == 0  # the iteration never finished, so a retry runs it again
