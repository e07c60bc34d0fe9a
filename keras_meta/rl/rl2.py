"""RL²: fast reinforcement learning via slow reinforcement learning (Duan et al., 2016).

A recurrent policy reads, at every step `t` of a trial, the observation together with the
previous action, reward and episode-end flag, `x_t = [s_t, a_{t-1}, r_{t-1}, d_{t-1}]`.
Its hidden state is carried across the episodes of one trial (several episodes of the same
task) and reset between trials, so learning a new task happens in the activations: the
weights are meta-learned by PPO over whole trials.
"""

import collections

import keras
import numpy as np
import tensorflow as tf
from gymnasium.vector import AutoresetMode

from keras_meta import ops
from keras_meta.ops.finite import apply_if_finite
from keras_meta._validation import check_positive_int, check_seed
from keras_meta.rl._loop import RLLearner, TrainingState, _positive_int, check_evaluation, check_tasks
from keras_meta.rl.adaptation import RecurrentSession
from keras_meta.rl.buffer import standardize_advantages
from keras_meta.rl.envs import _find_attr, as_task_env
from keras_meta.rl.objectives import ppo
from keras_meta.rl.policies import RL2Policy
from keras_meta.rl.rl2_inputs import PreviousStep, trial_inputs

TrialBatch = collections.namedtuple(
    "TrialBatch", ["inputs", "resets", "actions", "old_log_probs", "advantages", "returns", "masks"])
TrialBatch.__doc__ = """Tensors `[N, H, ...]` of `N` trial rows, the PPO training data of RL²."""


def episode_returns_in_trial(buffer):
    """Mean undiscounted return of the k-th episode of a trial, over all rows.

    Args:
        buffer: A filled `RolloutBuffer` with `episodes_per_trial` set.

    Returns:
        float64 `[episodes_per_trial]`; entry `k` averages the returns of every trial's
        episode `k` (after `k` adaptation episodes).
    """
    d = buffer.data()
    k = buffer.episodes_per_trial
    h = np.asarray(d["masks"]).shape[-1]
    ep = np.asarray(d["episode_ids"]).reshape(-1, h).astype(np.int64)
    masks = np.asarray(d["masks"]).reshape(-1, h) > 0
    rewards = np.asarray(d["rewards"], np.float64).reshape(-1, h)
    rows = np.broadcast_to(np.arange(ep.shape[0])[:, None], ep.shape)
    out = np.zeros(k)
    for i in range(k):
        sel = masks & (ep % k == i)
        # Average over episodes, not steps: count distinct (row, episode id) pairs.
        count = np.unique(rows[sel] * (1 << 32) + ep[sel]).size
        out[i] = rewards[sel].sum() / max(count, 1)
    return out


class RL2(RLLearner):
    """RL² trained with PPO over trials.

    Sampling: every row of a `RolloutBuffer` (`num_tasks` x `trials_per_task`) runs one
    trial of `episodes_per_trial` episodes of its task; the policy state starts at zero,
    is carried across episode ends and never crosses a trial boundary (the buffer's
    `trial_ids`).

    Update rule (PPO, Schulman et al., 2017, with the trial as the episode): advantages
    are GAE(gamma, lambda) over the recurrent values with `trial_level=True`, so the
    recursion runs through episode ends inside a trial and stops only at its end, which
    is terminal (`V = 0` after the last episode, whether it terminated or was truncated);
    then for `ppo_epochs` epochs and `minibatches` minibatches of whole trials,

        r_t = pi(a_t | h_t) / pi_old(a_t | h_t),
        L = -mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)
            + c_v * mean_t 0.5 (V(h_t) - R_t)^2 - c_e * mean_t H(pi(. | h_t)),

    with `R_t = A_t + V_old(h_t)`, means over the unmasked steps, the hidden states
    recomputed by unrolling each trial from a zero state, and gradients clipped to a
    global norm of `max_grad_norm`. A minibatch update whose loss or gradients are not
    finite is skipped (weights and optimizer state keep their last finite values; the
    logs show the non-finite loss), as the supervised learners do.

    Args:
        policy: An `RL2Policy`, or None to build one for the env with `units`.
        env: A task environment (`Navigation2D` runs on the batched C++ navigation), a
            `TaskEnv` with `clone()`, or a function returning one.
        episodes_per_trial: Episodes of the same task per trial (at least 1).
        horizon: Episode length (default: the env's `horizon`).
        max_trial_steps: Steps stored per trial (default `episodes_per_trial * horizon`);
            must hold at least one episode.
        units: GRU size when `policy` is None.
        gamma, gae_lambda: Discount and GAE lambda.
        clip_ratio, ppo_epochs, minibatches: PPO settings.
        value_coef, entropy_coef, max_grad_norm: Loss weights and gradient clipping.
        optimizer: Keras optimizer (default Adam(3e-3)).
        normalize_advantages: Standardise advantages over the batch.
        reward_scale: Factor on the rewards seen by the value function: the value head
            learns `reward_scale` times the returns (the advantages and the policy inputs
            are unchanged, up to the standardisation). Below 1 for tasks whose trial
            returns are large (e.g. 0.1 for 2D navigation, about -60 per trial), so the
            value loss does not swamp the policy gradient under `max_grad_norm`.
        rescale_actions: Continuous actions are in policy units, clipped to [-1, 1] and
            mapped onto the env's Box bounds, as `MAMLRL(rescale_actions=True)` does;
            otherwise they are in env units and clipped to the bounds.
        seed: Run seed; tasks and sampling noise derive from it.

    Attributes:
        training_state: A `keras_meta.rl.TrainingState` holding the policy, the optimizer
            and the iteration counter (what `fit`'s callbacks see as `self.model`).

    Raises:
        ValueError: For a trial shorter than one episode (`episodes_per_trial < 1` or
            `max_trial_steps < horizon`) or a policy that does not match the env.

    Example:

    >>> from keras_meta.rl import BernoulliBandit
    >>> learner = RL2(None, BernoulliBandit(2), episodes_per_trial=10, units=16)
    >>> history = learner.fit(epochs=1, steps_per_epoch=5, meta_batch_size=32)  # doctest: +SKIP
    >>> learner.meta_evaluate(BernoulliBandit(2).sample_tasks(100, seed=1))  # doctest: +SKIP
    {0: 0.49, 1: 0.55, ...}
    """

    def __init__(self, policy, env, episodes_per_trial=2, horizon=None, max_trial_steps=None, units=64,
                 gamma=0.99, gae_lambda=0.95, clip_ratio=0.2, ppo_epochs=4, minibatches=1, value_coef=0.5,
                 entropy_coef=0.01, max_grad_norm=0.5, optimizer=None, normalize_advantages=True, reward_scale=1.0,
                 rescale_actions=False, seed=0):
        ops.check_tensorflow_backend()
        if isinstance(episodes_per_trial, bool) or not isinstance(episodes_per_trial, (int, np.integer)) \
                or episodes_per_trial < 1:
            raise ValueError(
                "Expected a trial of at least one episode: `episodes_per_trial` a positive integer. "
                f"Received: episodes_per_trial={episodes_per_trial!r}")
        seed = check_seed(seed)
        self.env = self._task_env(env)
        self.episodes_per_trial = int(episodes_per_trial)
        self.horizon = _positive_int(int(horizon or getattr(self.env, "horizon", None)
                                         or self.env.spec.max_episode_steps), "horizon")
        full = self.episodes_per_trial * self.horizon
        self.max_trial_steps = full if max_trial_steps is None else _positive_int(max_trial_steps, "max_trial_steps")
        if self.max_trial_steps < self.horizon:
            raise ValueError(
                f"Expected a trial of at least one episode: max_trial_steps >= horizon={self.horizon}. "
                f"Received: max_trial_steps={max_trial_steps!r}")
        obs_space, act_space = self._spaces(self.env)
        self._obs_space, self._act_space = obs_space, act_space
        self.observation_shape = tuple(obs_space.shape)
        self.policy = RL2Policy.for_env(self.env, units=units) if policy is None else policy
        if not isinstance(self.policy, RL2Policy):
            raise TypeError(f"Expected `policy` to be a keras_meta.rl.RL2Policy or None. Received: policy of "
                            f"type {type(self.policy).__name__}")
        self._check_policy_spaces(self.policy, obs_space, act_space)
        self._set_action_mapping(act_space, self.policy.discrete, rescale_actions)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.clip_ratio = float(clip_ratio)
        self.ppo_epochs, self.minibatches = _positive_int(ppo_epochs, "ppo_epochs"), _positive_int(
            minibatches, "minibatches")
        self.value_coef, self.entropy_coef = float(value_coef), float(entropy_coef)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.optimizer = optimizer or keras.optimizers.Adam(3e-3)
        self.normalize_advantages = bool(normalize_advantages)
        self.reward_scale = float(reward_scale)
        if not self.reward_scale > 0:
            raise ValueError(f"Expected `reward_scale` > 0. Received: reward_scale={reward_scale!r}")
        self.seed = seed
        self._venvs = {}
        self.training_state = TrainingState(self.policy, self.optimizer)
        d = self.policy.input_dim
        self._act_fn = tf.function(self._act, reduce_retracing=True)
        self._unroll_fn = tf.function(
            lambda x, r: self.policy.unroll(x, r)[:2],
            input_signature=[tf.TensorSpec([None, None, d], tf.float32), tf.TensorSpec([None, None], tf.bool)])
        self._update_fn = tf.function(self._update, reduce_retracing=True)

    # ----------------------------------------------------------------- environments
    _task_env = staticmethod(as_task_env)

    # SAME_STEP: no reset steps, so every vector step is a policy step.
    _autoreset_mode = AutoresetMode.SAME_STEP

    def _assign_tasks(self, venv, tasks):
        if hasattr(venv, "set_tasks"):
            venv.set_tasks(tasks)
            return
        for sub, task in zip(venv.envs, tasks):
            _find_attr(sub, "set_task")(task)
            obs_space, act_space = sub.observation_space, sub.action_space
            if obs_space != self._obs_space or act_space != self._act_space:
                # A recurrent policy has fixed input and output sizes; a batch cannot mix spaces.
                raise ValueError(
                    "Expected the observation and action spaces to stay the same across tasks. Received: "
                    f"observation_space={obs_space}, action_space={act_space} after set_task({task!r}); "
                    f"the env was built with observation_space={self._obs_space}, "
                    f"action_space={self._act_space}")

    # ----------------------------------------------------------------- sampling
    def _act(self, x, state, seed, deterministic):
        dist, value, new_state = self.policy.step(x, state)
        action = self.policy.mode(dist) if deterministic else self.policy.sample(dist, seed)
        return action, new_state

    def act(self, inputs, state, seed, deterministic=False):
        """One compiled policy step, as `collect` takes it.

        Args:
            inputs: Policy inputs `[B, input_dim]` (see `keras_meta.rl.rl2_inputs`).
            state: Hidden state `[B, units]`.
            seed: Stateless sampling seed, int64 `[2]`.
            deterministic: Greedy / mean actions.

        Returns:
            `(actions, new_state)` as tensors.
        """
        return self._act_fn(inputs, state, seed, deterministic)

    def collect(self, tasks, trials_per_task=1, seed=0, deterministic=False, env=None, episodes_per_trial=None,
                record_states=False):
        """Runs one trial per (task, trial) row with the current policy.

        Args:
            tasks: Tasks (e.g. from `env.sample_tasks`).
            trials_per_task: Trials per task (`E`).
            seed: Sampling seed.
            deterministic: Greedy / mean actions.
            env: Task environment (default: the training env).
            episodes_per_trial: Episodes per trial (default: the training value).
            record_states: Also return the hidden state after every recorded step.

        Returns:
            A filled `RolloutBuffer` (`num_tasks=len(tasks)`, `num_envs=trials_per_task`),
            and with `record_states` also float32 states `[T, E, H, units]`.
        """
        tasks, seed = check_tasks(tasks), check_seed(seed)
        env = self.env if env is None else self._task_env(env)
        ept = self.episodes_per_trial if episodes_per_trial is None else _positive_int(
            episodes_per_trial, "episodes_per_trial")
        steps = self.max_trial_steps if episodes_per_trial is None else max(self.max_trial_steps,
                                                                             ept * self.horizon)
        num_tasks, e = len(tasks), _positive_int(trials_per_task, "trials_per_task")
        n = num_tasks * e
        policy = self.policy
        state = np.zeros([n, policy.units], np.float32)
        prev = PreviousStep(policy, n)
        states = np.zeros([n, steps, policy.units], np.float32) if record_states else None
        lengths = np.zeros(n, np.int64)
        new_state = None

        def act(obs, seed):
            nonlocal new_state
            actions, new_state = self._act_fn(prev.inputs(obs), tf.constant(state), seed, deterministic)
            new_state = new_state.numpy()
            return actions.numpy()

        def observe(actions, rewards, dones, valid):
            nonlocal state
            # Steps the buffer skips (finished rows) leave memory untouched.
            state = np.where(valid[:, None], new_state, state)
            prev.record(actions, rewards, dones, valid)
            if record_states:
                rows = np.flatnonzero(valid)
                states[rows, lengths[rows]] = new_state[rows]
                lengths[rows] += 1

        buffer = self._rollout(env, tasks, e, steps, seed, act, observe, episodes_per_trial=ept,
                               max_episodes_per_env=ept)
        if record_states:
            return buffer, states.reshape(num_tasks, e, steps, policy.units)
        return buffer

    def process(self, buffer):
        """GAE over trials (`trial_level=True`) and the PPO batch of a filled buffer.

        Returns:
            A `TrialBatch` of tensors `[T * E, H, ...]`.
        """
        d = buffer.data()
        inputs, resets = trial_inputs(self.policy, d)
        dist, values = self._unroll_fn(tf.constant(inputs), tf.constant(resets))
        shape = d["masks"].shape
        # The value head predicts scaled returns; GAE runs in reward units.
        values = (values.numpy().reshape(shape) / self.reward_scale).astype(np.float32)
        # A trial's end is terminal for RL²: nothing of the task follows it.
        adv, returns = buffer.gae(values, np.zeros(shape, np.float32), self.gamma, self.gae_lambda,
                                  trial_level=True)
        returns = (returns * self.reward_scale).astype(np.float32)
        masks = np.asarray(d["masks"], np.float32)
        if self.normalize_advantages:
            adv = standardize_advantages(adv, masks)
        n, h = inputs.shape[:2]
        actions = np.asarray(d["actions"]).reshape((n, h) if self.policy.discrete else (n, h, -1))
        old_log_probs = self.policy.log_prob(dist, tf.constant(actions))
        return TrialBatch(tf.constant(inputs), tf.constant(resets), tf.constant(actions), old_log_probs,
                          tf.constant(adv.reshape(n, h)), tf.constant(returns.reshape(n, h)),
                          tf.constant(masks.reshape(n, h)))

    # ----------------------------------------------------------------- training
    def _update(self, batch):
        variables = self.policy.trainable_variables
        with tf.GradientTape() as tape:
            dist, values, _ = self.policy.unroll(batch.inputs, batch.resets)
            log_p = self.policy.log_prob(dist, batch.actions)
            m = batch.masks
            count = tf.maximum(tf.reduce_sum(m), 1.0)
            ratio = tf.exp(log_p - batch.old_log_probs)
            surrogate = ppo.clipped_surrogate(ratio, batch.advantages, self.clip_ratio)
            policy_loss = -tf.reduce_sum(surrogate * m) / count
            value_loss = 0.5 * tf.reduce_sum(tf.square(values - batch.returns) * m) / count
            entropy = tf.reduce_sum(self.policy.entropy(dist) * m) / count
            loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        grads = tape.gradient(loss, variables)
        if self.max_grad_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)
        apply_if_finite(lambda: self.optimizer.apply(grads, variables), loss, grads)
        kl = tf.reduce_sum((batch.old_log_probs - log_p) * m) / count
        clip_fraction = tf.reduce_sum(ppo.clip_fraction(ratio, self.clip_ratio) * m) / count
        return {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                "kl": kl, "clip_fraction": clip_fraction}

    def train_step(self, tasks, trials_per_task=1):
        """One PPO iteration on fresh trials of `tasks`; returns a dict of logs."""
        tasks, trials_per_task = check_tasks(tasks), check_positive_int(trials_per_task, "trials_per_task")
        it = self.iteration
        buffer = self.collect(tasks, trials_per_task, seed=self._seed(it, 1))
        per_episode = episode_returns_in_trial(buffer)
        logs = {"return": float(per_episode.sum()), "first_episode_return": float(per_episode[0]),
                "last_episode_return": float(per_episode[-1])}
        logs.update(self.update(self.process(buffer), it))
        # Only now: an iteration that raised leaves the counter, so a retry draws its tasks again.
        self.iteration = it + 1
        return logs

    def update(self, batch, iteration):
        """The PPO epochs of iteration `iteration` on `batch`; returns the mean losses.

        `ppo_epochs` passes over `minibatches` minibatches of whole trials, shuffled with a
        generator seeded from the run seed and `iteration`. `train_step` runs it on the
        trials it collects, `keras_meta.integrations.tf_agents.RL2Agent.train` on trials
        a TF-Agents driver collected; the iteration counter is the caller's to advance.

        Args:
            batch: A `TrialBatch` (see `process`).
            iteration: The iteration index the minibatch order derives from.

        Returns:
            A dict of float means over the minibatch updates (`loss`, `policy_loss`,
            `value_loss`, `entropy`, `kl`, `clip_fraction`).
        """
        n = int(batch.masks.shape[0])
        rng = np.random.default_rng(self._seed(iteration, 2))
        stats = collections.defaultdict(list)
        for _ in range(self.ppo_epochs):
            order = rng.permutation(n)
            for part in np.array_split(order, min(self.minibatches, n)):
                idx = tf.constant(np.sort(part))
                out = self._update_fn(TrialBatch(*(tf.gather(v, idx) for v in batch)))
                for k, v in out.items():
                    stats[k].append(float(v))
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def evaluation_probe(self, options):
        """What `keras_meta.evaluation.evaluate` measures of this learner."""
        from keras_meta.evaluation.probes import RL2Probe

        return RL2Probe(self, options)

    def fit(self, epochs=1, meta_batch_size=20, trials_per_task=1, steps_per_epoch=1, callbacks=None, verbose=1):
        """Meta-trains for `epochs * steps_per_epoch` PPO iterations.

        Tasks of iteration `i` come from `env.sample_tasks(meta_batch_size, seed_i)` with
        `seed_i` derived from the run seed, and `i` is the tracked counter
        `training_state.iteration`, so a run is reproducible and a run restored from a
        checkpoint continues the same task sequence.

        Args:
            epochs: Number of epochs.
            meta_batch_size: Tasks per iteration.
            trials_per_task: Trials sampled per task and iteration.
            steps_per_epoch: Iterations per epoch.
            callbacks: Keras callbacks. They see `training_state` (the policy as
                `self.model.policy`, the PPO optimizer and the iteration counter) as
                `self.model`, so `keras.callbacks.BackupAndRestore` resumes exactly.
            verbose: 0 silent, 1 a progress bar per epoch.

        Returns:
            A `keras.callbacks.History` of per-epoch mean logs (`return`: mean trial return;
            `first_episode_return` / `last_episode_return`: mean return of a trial's first
            and last episode; PPO losses, `kl`, `clip_fraction`).
        """
        trials_per_task = check_positive_int(trials_per_task, "trials_per_task")
        return self._fit(lambda tasks: self.train_step(tasks, trials_per_task), meta_batch_size, epochs,
                         steps_per_epoch, callbacks, verbose)

    # ----------------------------------------------------------------- evaluation
    def evaluate_episodes(self, env, task, adaptation_episodes, eval_episodes, seed=0, deterministic=False):
        """Returns and successes of `eval_episodes` episodes after `adaptation_episodes` of the same trial.

        One trial of `adaptation_episodes + eval_episodes` episodes of `task` on `env`, the
        memory carried throughout; the last `eval_episodes` are measured (the Meta-World
        protocol, `keras_meta.rl.meta_evaluate_episodes`).

        Args:
            env: The task environment (not a vector env).
            task: The task.
            adaptation_episodes: Episodes before the evaluated ones (non-negative).
            eval_episodes: Evaluated episodes.
            seed: Sampling seed (episode `e` of the trial resets with `seed + e`).
            deterministic: Greedy / mean actions in the evaluated episodes (the
                adaptation episodes always sample).

        Returns:
            `(returns, successes)`: lists of `eval_episodes` floats and bools.
        """
        adaptation_episodes, eval_episodes, seed = check_evaluation(adaptation_episodes, eval_episodes, seed)
        _find_attr(env, "set_task")(task)
        state = self.policy.get_initial_state(1)
        prev = PreviousStep(self.policy, 1)
        counter = [0]
        returns, successes = [], []
        for e in range(adaptation_episodes + eval_episodes):
            greedy = deterministic and e >= adaptation_episodes

            def act(obs):
                nonlocal state
                counter[0] += 1
                action, state = self.act(prev.inputs(obs), state, tf.constant([seed % (2**31), counter[0]], tf.int64),
                                         greedy)
                return action.numpy()[0]

            total, success = self._episode(env, act, seed + e,
                                           record=lambda a, reward, done: prev.record(a, [reward], [done]))
            if e >= adaptation_episodes:
                returns.append(total)
                successes.append(success)
        return returns, successes

    def _adaptation_session(self, num_envs, next_seed):
        # One trial per row from the zero memory, through the adaptation and evaluated episodes.
        return RecurrentSession(self.policy, self.act, num_envs, next_seed)

    def meta_evaluate(self, tasks, episodes=None, trials_per_task=1, seed=0, deterministic=False,
                      episodes_per_trial=None):
        """Mean return of each episode of a trial on `tasks` (adaptation in the activations).

        Args:
            tasks: Held-out tasks.
            episodes: Episode indices to report (default: every episode of the trial);
                index `k` is the return after `k` adaptation episodes.
            trials_per_task: Trials per task.
            seed: Sampling seed.
            deterministic: Greedy / mean actions.
            episodes_per_trial: Trial length in episodes (default: the training value).

        Returns:
            A dict `{k: mean return of episode k}`.

        Raises:
            ValueError: If an index is outside the trial.
        """
        tasks, seed = check_tasks(tasks), check_seed(seed)
        trials_per_task = check_positive_int(trials_per_task, "trials_per_task")
        ept = self.episodes_per_trial if episodes_per_trial is None else check_positive_int(
            episodes_per_trial, "episodes_per_trial")
        episodes = list(range(ept)) if episodes is None else [int(k) for k in episodes]
        bad = [k for k in episodes if not 0 <= k < ept]
        if bad:
            raise ValueError(f"Expected episode indices in [0, {ept}). Received: episodes={episodes!r}")
        buffer = self.collect(tasks, trials_per_task, seed=self._seed(seed, 4), deterministic=deterministic,
                              episodes_per_trial=ept)
        per_episode = episode_returns_in_trial(buffer)
        return {k: float(per_episode[k]) for k in episodes}
