"""The training state and Keras-style training loop shared by the RL meta-learners."""

import collections

import gymnasium
import keras
import numpy as np
import tensorflow as tf
from gymnasium import spaces

from keras_meta import _core
from keras_meta._validation import check_positive_int, check_seed, check_steps
from keras_meta.rl.buffer import RolloutBuffer
from keras_meta.rl.envs import _find_attr, vector_task_env


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_meta")
class TrainingState(keras.Model):
    """Everything an RL meta-learner's training continues from, as one Keras model.

    The callbacks of `MAMLRL.fit` and `RL2.fit` see it as `self.model`. Its weights are
    the policy's (`self.model.policy`) plus the meta-iteration counter, and its
    `optimizer` is the learner's (None for TRPO), so `save_weights` / `load_weights`, and
    with them `keras.callbacks.BackupAndRestore` and `keras.callbacks.ModelCheckpoint`,
    hold the whole training state: the tasks and sampling noise of an iteration are a
    pure function of (run seed, iteration).

    Args:
        policy: The learner's policy (a built Keras model).
        optimizer: The learner's Keras optimizer, or None.
        **kwargs: Other `keras.Model` arguments.
    """

    def __init__(self, policy, optimizer=None, **kwargs):
        super().__init__(**kwargs)
        self.policy = policy
        self.iteration = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                         name="iteration")
        # The iteration this fit started from, saved with the rest, so a restored state
        # tells how far into the interrupted fit it is (see `keras_style_loop`).
        self.fit_start = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                         name="fit_start")
        self.optimizer = None
        self.use_optimizer(optimizer)
        self.built = True

    def use_optimizer(self, optimizer):
        """Makes `optimizer` (or None) the optimizer saved and restored with the state."""
        if optimizer is not None and not optimizer.built:
            # Slot variables are matched by position when a backup is loaded: build them in
            # the order of the variables the learner applies updates to.
            optimizer.build(self.policy.trainable_variables)
        self.optimizer = optimizer

    def call(self, inputs, training=False):
        return self.policy(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        config["policy"] = keras.saving.serialize_keras_object(self.policy)
        config["optimizer"] = None if self.optimizer is None else keras.optimizers.serialize(self.optimizer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        policy = keras.saving.deserialize_keras_object(config.pop("policy"))
        optimizer = config.pop("optimizer", None)
        return cls(policy, None if optimizer is None else keras.optimizers.deserialize(optimizer), **config)


def check_tasks(tasks):
    """Returns `tasks` as a list, refusing an empty or non-sequence one (nothing to sample)."""
    try:
        listed = list(tasks)
    except TypeError:
        listed = None
    if not listed:
        raise ValueError(f"Expected `tasks` to be a non-empty sequence of tasks. Received: tasks={tasks!r}")
    return listed


def check_evaluation(adaptation_episodes, eval_episodes, seed):
    """The arguments of `evaluate_episodes`, checked (adaptation may take no episodes)."""
    return (check_steps(adaptation_episodes, "adaptation_episodes", allow_zero=True),
            check_positive_int(eval_episodes, "eval_episodes"), check_seed(seed))


class RLLearner:
    """Run seed, iteration counter, action mapping, sampling loop and `fit` loop shared by `MAMLRL` and `RL2`.

    A subclass sets `policy`, `optimizer`, `seed`, `env`, `horizon`, `_venvs` (a dict)
    and `training_state` (a `TrainingState`), its vector envs' `_autoreset_mode`, calls
    `_set_action_mapping` and implements `train_step(tasks, ...)` and
    `_adaptation_session(num_envs, next_seed)`; it may override `_assign_tasks(venv,
    tasks)` (e.g. to check each task's spaces).
    """

    _autoreset_mode = None

    @staticmethod
    def _assign_tasks(venv, tasks):
        """Gives row `i` of the vector env `venv` the task `tasks[i]`."""
        if hasattr(venv, "set_tasks"):
            venv.set_tasks(tasks)
        else:
            for sub, task in zip(venv.envs, tasks):
                _find_attr(sub, "set_task")(task)

    def _vector_env(self, env, n):
        key = (id(env), n)
        if key not in self._venvs:
            self._venvs[key] = vector_task_env(env, n, self.horizon, self._autoreset_mode)
        return self._venvs[key]

    def _rollout(self, env, tasks, rows, steps, seed, act, observe=None, **buffer_options):
        """Steps one vector env of `len(tasks) * rows` rows with `act` until every row is full.

        Row `(t, e)` runs task `t`. The env resets with `seed`, and step `h` samples with
        the stateless seed `[seed, h]`, so a rollout is a pure function of the weights,
        the tasks and `seed`.

        Args:
            env: The task environment the vector env is built from.
            tasks: Tasks, each repeated over `rows` rows.
            rows: Rows per task (`num_envs` of the buffer).
            steps: Steps stored per row (the buffer's horizon).
            seed: Sampling seed.
            act: Function of `(observations [n, ...], seed int64 [2])` returning the
                policy's actions `[n, ...]` as NumPy, in policy units.
            observe: Optional function of `(actions, rewards, dones, valid)` called after
                every step, `valid` being the rows the buffer recorded it for (the policy's
                memory moves on only there).
            **buffer_options: Further `RolloutBuffer.for_env` arguments.

        Returns:
            The filled `RolloutBuffer`.
        """
        num_tasks = len(tasks)
        venv = self._vector_env(env, num_tasks * rows)
        self._assign_tasks(venv, [task for task in tasks for _ in range(rows)])
        buffer = RolloutBuffer.for_env(venv, num_tasks, rows, steps, **buffer_options)
        obs, _ = venv.reset(seed=int(seed % (2**31)))
        step_seed = int(seed % (2**31 - 1))
        # Reset steps (NEXT_STEP) and finished rows are not recorded: twice the steps bounds the loop.
        for h in range(2 * steps + 1):
            actions = act(obs, tf.constant([step_seed, h], tf.int64))
            nxt, rewards, terminated, truncated, infos = venv.step(self.env_actions(actions))
            valid = buffer.add(obs, actions, rewards, terminated, truncated, nxt, infos)
            if observe is not None:
                observe(actions, rewards, np.asarray(terminated) | np.asarray(truncated),
                        np.asarray(valid).reshape(-1))
            obs = nxt
            if buffer.finished:
                break
        return buffer

    @staticmethod
    def _spaces(env):
        if isinstance(env, gymnasium.vector.VectorEnv):
            return env.single_observation_space, env.single_action_space
        return env.observation_space, env.action_space

    @staticmethod
    def _check_policy_spaces(policy, observation_space, action_space):
        """Raises a ValueError unless `policy`'s sizes are the env's.

        A policy of another action size or observation width would have its actions or
        observations reshaped or broadcast onto the env's without an error.
        """
        discrete = isinstance(action_space, spaces.Discrete)
        name, size = ("num_actions", int(action_space.n)) if discrete else (
            "action_dim", int(np.prod(action_space.shape)))
        obs_dim = getattr(policy, "observation_dim", None)
        own = "num_actions" if policy.discrete else "action_dim"
        if (policy.discrete != discrete or getattr(policy, name, None) != size
                or obs_dim not in (None, int(np.prod(observation_space.shape)))):
            raise ValueError(
                f"Expected `policy` to match the env's spaces. Received: policy with discrete={policy.discrete}, "
                f"{own}={getattr(policy, own, None)}, observation_dim={obs_dim} for "
                f"observation_space={observation_space}, action_space={action_space}")

    def _set_action_mapping(self, action_space, discrete, rescale_actions):
        """Sets how `env_actions` maps policy actions onto `action_space`.

        Raises:
            ValueError: `rescale_actions` for a discrete space or one with infinite bounds.
        """
        rescale_actions = bool(rescale_actions)
        if rescale_actions and (discrete or not (np.isfinite(action_space.low).all()
                                                 and np.isfinite(action_space.high).all())):
            raise ValueError("Expected a continuous action space with finite bounds for `rescale_actions=True`. "
                             f"Received: action_space={action_space}")
        self.rescale_actions = rescale_actions
        self._action_low = None if discrete else action_space.low
        self._action_high = None if discrete else action_space.high

    def env_actions(self, actions):
        """What the env receives for policy actions `actions` (`[..., action_dim]`).

        Discrete actions pass unchanged. Continuous ones are clipped to the env's bounds, or
        with `rescale_actions` clipped to [-1, 1] and mapped onto the bounds,
        `low + (a + 1) (high - low) / 2`.

        Args:
            actions: NumPy actions (host envs), or a tensor (in-graph envs, where the
                mapping runs as TF ops inside the caller's graph).

        Returns:
            The env's actions, NumPy or a tensor like `actions`.
        """
        if self._action_low is None:
            return actions
        if tf.is_tensor(actions):
            low, high = (tf.constant(b, actions.dtype) for b in (self._action_low, self._action_high))
            if self.rescale_actions:
                return low + (tf.clip_by_value(actions, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
            return tf.clip_by_value(actions, low, high)
        low, high = self._action_low, self._action_high
        if self.rescale_actions:
            return (low + (np.clip(actions, -1.0, 1.0) + 1.0) * 0.5 * (high - low)).astype(actions.dtype)
        return np.clip(actions, low, high)

    def _episode(self, env, act, seed, record=None):
        """Runs one episode of `env` (at most `horizon` steps) with the policy `act`.

        Args:
            env: A (non-vector) task environment, its task already set.
            act: Function of an observation returning the policy's action (policy units).
            seed: The reset seed.
            record: Optional function of `(action, reward, done)` called after each step.

        Returns:
            `(undiscounted return, success)`; success is Meta-World's `info["success"]`
            at any step (False for envs without it).
        """
        obs, _ = env.reset(seed=seed)
        total, success = 0.0, False
        for _ in range(self.horizon):
            action = act(obs)
            obs, reward, terminated, truncated, info = env.step(self.env_actions(action))
            total += float(reward)
            success = success or bool(info.get("success", 0.0))
            done = terminated or truncated
            if record is not None:
                record(action, reward, done)
            if done:
                break
        return total, success

    def adaptation_session(self, num_envs, next_seed):
        """How this learner adapts to `num_envs` tasks whose envs an outside loop steps.

        The hook of interactive evaluation protocols (`keras_meta.rl.MetaWorldAgent`, for
        Meta-World's own `metalearning_evaluation`): a fresh session for a new batch of
        tasks, one per row of the vector env, which takes the protocol's actions,
        adaptation steps, adaptation calls and episode ends (see
        `keras_meta.rl.adaptation`). `MAMLRL` adapts a policy per row by policy-gradient
        steps, `RL2` in its recurrent memory, `MetaGradientPG` not at all.

        Args:
            num_envs: Rows (tasks) of the vector env.
            next_seed: Function of no arguments returning the next stateless sampling
                seed, an int64 tensor `[2]` (the caller's stream, so each session draws
                fresh seeds).

        Returns:
            A `keras_meta.rl.AdaptationSession`.

        Raises:
            ValueError, TypeError: For a `num_envs` that is not a positive integer, or a
                `next_seed` that is not callable.
        """
        num_envs = check_positive_int(num_envs, "num_envs")
        if not callable(next_seed):
            raise TypeError("Expected `next_seed` to be a function of no arguments returning an int64 [2] seed. "
                            f"Received: next_seed of type {type(next_seed).__name__}")
        return self._adaptation_session(num_envs, next_seed)

    def _adaptation_session(self, num_envs, next_seed):
        """The learner's `AdaptationSession` for checked arguments (see `adaptation_session`)."""
        raise NotImplementedError

    @property
    def iteration(self):
        """The meta-iteration counter `training_state.iteration` as an int.

        `fit` draws iteration `i`'s tasks with `iteration_tasks(i, n)`; assigning the
        counter (e.g. back after timing extra `train_step` calls) rewinds that stream.
        """
        return int(self.training_state.iteration.numpy())

    @iteration.setter
    def iteration(self, value):
        self.training_state.iteration.assign(int(value))

    def _seed(self, *path):
        s = self.seed
        for p in path:
            s = _core.derive_seed(s, p)
        return s

    def iteration_tasks(self, iteration, n):
        """The `n` tasks `fit` trains on at meta-iteration `iteration` with `meta_batch_size=n`.

        Args:
            iteration: A meta-iteration index (non-negative).
            n: Number of tasks.

        Returns:
            `env.sample_tasks(n, seed)` with the seed derived from the run seed and `iteration`.
        """
        return self.env.sample_tasks(n, seed=self._seed(iteration, 0) % (2**63))

    def _fit(self, train_step, meta_batch_size, epochs, steps_per_epoch, callbacks, verbose):
        """`keras_style_loop` over `train_step(tasks)` on the tasks of each iteration."""
        epochs = check_positive_int(epochs, "epochs")
        steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")

        def step():
            return train_step(self.iteration_tasks(self.iteration, meta_batch_size))

        self.training_state.use_optimizer(self.optimizer)
        return keras_style_loop(self.training_state, step, epochs, steps_per_epoch, callbacks, verbose)


def keras_style_loop(state, step_fn, epochs, steps_per_epoch, callbacks=None, verbose=1):
    """Runs `step_fn()` `epochs * steps_per_epoch` times with Keras callbacks and a Progbar.

    A state restored by a callback's `on_train_begin` (`keras.callbacks.BackupAndRestore`)
    resumes where it was saved, as `keras.Model.fit` does: the loop starts from the
    restored epoch and leaves out the steps of that epoch the state already contains.
    Both come from the restored counters (`state.iteration - state.fit_start` steps were
    done), not from BackupAndRestore's metadata, whose epoch falls back to 0 in backups
    taken after a resume, so a run survives any number of interruptions.

    Args:
        state: The `TrainingState` the callbacks see as `self.model` (`stop_training` is
            honoured, its `history` is returned). `step_fn` advances `state.iteration`.
        step_fn: A function of no arguments running one meta-iteration and returning
            a dict of float logs.
        epochs: Number of epochs.
        steps_per_epoch: Meta-iterations per epoch.
        callbacks: Keras callbacks.
        verbose: 0 silent, 1 a progress bar per epoch.

    Returns:
        A `keras.callbacks.History` of per-epoch mean logs (an epoch resumed mid-way
        averages the steps run after the resume).
    """
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=False, model=state, epochs=epochs,
        steps=steps_per_epoch, verbose=verbose)
    state.stop_training = False
    state.fit_start.assign(state.iteration)
    callback_list.on_train_begin()
    done = int(state.iteration.numpy()) - int(state.fit_start.numpy())
    first_epoch, skip = divmod(done, steps_per_epoch)
    logs = {}
    for epoch in range(first_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose) if verbose else None
        epoch_logs = collections.defaultdict(list)
        start, skip = skip, 0
        for step in range(start, steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            step_logs = step_fn()
            for key, value in step_logs.items():
                epoch_logs[key].append(value)
            callback_list.on_train_batch_end(step, step_logs)
            if bar is not None:
                bar.update(step + 1, [(k, v) for k, v in step_logs.items()])
            if state.stop_training:
                break
        logs = {k: float(np.mean(v)) for k, v in epoch_logs.items()}
        callback_list.on_epoch_end(epoch, logs)
        if state.stop_training:
            break
    callback_list.on_train_end(logs)
    return state.history
