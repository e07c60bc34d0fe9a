"""MAML for reinforcement learning (Finn et al., 2017) with TRPO or PPO/ProMP outer steps."""

import collections
import math

import keras
import numpy as np
import tensorflow as tf
from gymnasium.vector import AutoresetMode

from keras_meta import inner, ops
from keras_meta.ops.finite import apply_if_finite
from keras_meta.ops.vectorize import stack_copies
from keras_meta._validation import check_learning_rate, check_positive_int, check_seed, check_steps
from keras_meta.rl._loop import RLLearner, TrainingState, check_evaluation, check_tasks
from keras_meta.rl.adaptation import PolicySession
from keras_meta.rl.buffer import standardize_advantages
from keras_meta.rl.envs import _find_attr, as_task_env
from keras_meta.rl.objectives import ppo, trpo

Batch = collections.namedtuple("Batch", ["observations", "actions", "advantages", "masks", "steps"])
Batch.__doc__ = """Tensors `[T, E, H, ...]` of one sampling phase (steps: index within the episode)."""


class LinearFeatureBaseline:
    """The linear time-varying baseline of Duan et al. (2016), used by MAML-RL and ProMP.

    Features `phi(s, t) = [clip(s, -10, 10), clip(s, -10, 10)^2, u, u^2, u^3, 1]` with
    `u = t / 100`; weights `w = (Phi^T M Phi + reg I)^{-1} Phi^T M R` per task (M: masks,
    R: discounted returns). Fitted in float64 with TensorFlow ops, batched over tasks.

    Args:
        reg_coeff: Ridge coefficient.
    """

    def __init__(self, reg_coeff=1e-5):
        self.reg_coeff = reg_coeff

    @staticmethod
    def features(obs, steps):
        obs = tf.clip_by_value(tf.cast(obs, tf.float64), -10.0, 10.0)
        obs = tf.reshape(obs, tf.concat([tf.shape(obs)[:3], [-1]], 0))
        u = tf.cast(steps, tf.float64)[..., None] / 100.0
        return tf.concat([obs, obs**2, u, u**2, u**3, tf.ones_like(u)], axis=-1)

    def fit_predict(self, obs, next_obs, steps, returns, masks):
        """Fits one baseline per task and returns `(V(s_t), V(s_{t+1}))`, float32 `[T, E, H]`."""
        phi = self.features(obs, steps)
        p = phi.shape[-1]
        t = tf.shape(phi)[0]
        flat = tf.reshape(phi, [t, -1, p])
        m = tf.reshape(tf.cast(masks, tf.float64), [t, -1, 1])
        r = tf.reshape(tf.cast(returns, tf.float64), [t, -1, 1])
        gram = tf.matmul(flat * m, flat, transpose_a=True) + self.reg_coeff * tf.eye(p, dtype=tf.float64)
        w = tf.linalg.solve(gram, tf.matmul(flat * m, r, transpose_a=True))
        values = tf.einsum("tehp,tpo->teh", phi, w)
        next_values = tf.einsum("tehp,tpo->teh", self.features(next_obs, steps + 1), w)
        return tf.cast(values, tf.float32), tf.cast(next_values, tf.float32)


class MAMLRL(RLLearner):
    """Model-agnostic meta-learning for policy-gradient RL.

    Inner step (per task `i`, repeated `inner_steps` times, each on fresh trajectories
    `D_i^k` sampled with the current fast weights):

        phi_i^{k+1} = phi_i^k - alpha * grad L_in(phi_i^k; D_i^k),
        L_in(phi; D) = -sum_t m_t log pi_phi(a_t | s_t) A_t / sum_t m_t,

    REINFORCE with advantages `A` from GAE(gamma, lambda) (lambda=1: Monte-Carlo returns
    minus the baseline) over a linear feature baseline fitted per task. The outer
    objective is the importance-weighted surrogate on post-update trajectories `D'_i`,

        L_out(theta) = -mean_i sum_t m_t r_t(theta) A_t / sum_t m_t,
        r_t(theta) = pi_{phi_i(theta)}(a_t | s_t) / pi_old(a_t | s_t),

    differentiated through the inner updates (second order unless `first_order`).

    - TRPO (default): `s = F^{-1} g` by conjugate gradient with products `F v`, F the
      Hessian of the mean KL(pi_old || pi_{phi(theta)}) over tasks, computed as
      `J^T H_kl J v` (J: Jacobian of the distribution parameters through the inner
      updates), `theta <- theta - beta s` with
      `beta = sqrt(2 max_kl / s^T F s)` shrunk by `ls_backtrack` until the surrogate
      decreases and the mean KL is at most `max_kl`.
    - PPO / ProMP-style: `ppo_epochs` optimizer steps on the clipped objective
      `-mean_i mean_t min(r A, clip(r, 1 - eps, 1 + eps) A)`.

    An outer update whose loss, gradients or TRPO candidate are not finite is skipped
    (weights and optimizer state keep their last finite values; the logs show the
    non-finite loss), as the supervised learners do.

    Args:
        policy: A `GaussianPolicy` or `CategoricalPolicy` (a Keras 3 model).
        env: A task environment (`Navigation2D` and `BatchedNavigation2D` use the batched
            C++ navigation), a `TaskEnv` with `clone()`, or a function returning one.
        inner_lr: `alpha` (0.1 in the paper).
        inner_steps: Number of inner policy-gradient steps during training.
        outer: "trpo" or "ppo".
        gamma, gae_lambda: Discount and GAE lambda for advantages.
        max_kl, cg_iters, cg_damping, ls_backtrack, ls_max_steps: TRPO settings (the
            defaults are those of the MAML and ProMP reference code's
            `ConjugateGradientOptimizer`).
        fvp_subsample: The Fisher-vector products of the conjugate-gradient solve use every
            `fvp_subsample`-th step of every episode (pre- and post-update batches); the
            gradient, the step length and the line search always use all steps. Default 1
            (every step), as in the MAML and ProMP reference code (`subsample_factor=1`);
            OpenAI Baselines' TRPO uses every 5th sample. A subsampled Fisher changes only
            the search direction: the KL bound is checked on all samples.
        clip_ratio, ppo_epochs, optimizer: PPO settings (optimizer defaults to Adam(1e-3)).
        first_order: Drop second-order terms of the inner update.
        rescale_actions: Continuous actions are in policy units: `a` is clipped to [-1, 1]
            and mapped affinely onto the env's Box bounds, `low + (a + 1) (high - low) / 2`
            (rllab's `normalize`, which the MAML paper's experiments ran under). Otherwise
            actions are in env units and clipped to the bounds. The policy's log-probabilities
            are always those of the unclipped policy-unit actions; adapted policies act in
            the same units.
        normalize_advantages: Standardise advantages per task (rllab's `center_adv`).
        horizon: Episode length (default: the env's `horizon`).
        seed: Run seed; tasks and sampling noise derive from it.

    Attributes:
        training_state: A `keras_meta.rl.TrainingState` holding the policy, the optimizer
            and the meta-iteration counter (what `fit`'s callbacks see as `self.model`).

    Example:

    >>> body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(100, "relu"),
    ...                          keras.layers.Dense(100, "relu"), keras.layers.Dense(2)])
    >>> learner = MAMLRL(GaussianPolicy(body, 2), Navigation2D())
    >>> history = learner.fit(epochs=2, meta_batch_size=4, episodes_per_task=4)  # doctest: +SKIP
    """

    def __init__(self, policy, env, inner_lr=0.1, inner_steps=1, outer="trpo", gamma=0.99, gae_lambda=1.0,
                 max_kl=0.01, cg_iters=10, cg_damping=1e-5, ls_backtrack=0.8, ls_max_steps=15, fvp_subsample=1,
                 clip_ratio=0.2, ppo_epochs=5, optimizer=None, first_order=False, rescale_actions=False,
                 normalize_advantages=True, horizon=None, seed=0):
        ops.check_tensorflow_backend()
        if outer not in ("trpo", "ppo"):
            raise ValueError(f"Expected `outer` to be 'trpo' or 'ppo'. Received: outer={outer!r}")
        inner_lr = check_learning_rate(inner_lr, "inner_lr")
        inner_steps = check_steps(inner_steps, "inner_steps", allow_zero=True)
        cg_iters = check_positive_int(cg_iters, "cg_iters")
        ls_max_steps = check_positive_int(ls_max_steps, "ls_max_steps")
        fvp_subsample = check_positive_int(fvp_subsample, "fvp_subsample")
        ppo_epochs = check_positive_int(ppo_epochs, "ppo_epochs")
        seed = check_seed(seed)
        if horizon is not None:
            horizon = check_positive_int(horizon, "horizon")
        self.env = self._task_env(env)
        self.policy = policy
        self.inner_lr, self.inner_steps, self.outer = inner_lr, inner_steps, outer
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.max_kl, self.cg_iters, self.cg_damping = float(max_kl), cg_iters, float(cg_damping)
        self.ls_backtrack, self.ls_max_steps = float(ls_backtrack), ls_max_steps
        self.fvp_subsample = fvp_subsample
        self.clip_ratio, self.ppo_epochs = float(clip_ratio), ppo_epochs
        self.optimizer = optimizer or (keras.optimizers.Adam(1e-3) if outer == "ppo" else None)
        self.first_order, self.normalize_advantages = bool(first_order), bool(normalize_advantages)
        self.seed = seed
        self.baseline = LinearFeatureBaseline()
        self.horizon = int(horizon or getattr(self.env, "horizon", None) or self.env.spec.max_episode_steps)
        obs_space, act_space = self._spaces(self.env)
        self._check_policy_spaces(policy, obs_space, act_space)
        self.observation_shape = obs_space.shape
        self._set_action_mapping(act_space, policy.discrete, rescale_actions)
        if not getattr(policy, "built", False) or not hasattr(policy, "observation_dim"):
            policy.build_for(int(np.prod(self.observation_shape)))
        self._venvs = {}
        self.training_state = TrainingState(policy, self.optimizer)
        self._rule = inner.sgd(self.inner_lr)
        self._act_fn = tf.function(self._act)
        self._adapt_fn = tf.function(self._adapt_all)
        self._adapt_step_fn = tf.function(self._adapt_step)
        self._dist_fn = tf.function(self._dist_all)
        self._trpo_fn = tf.function(self.trpo_update)
        self._ppo_fn = tf.function(self.ppo_update)
        self._baseline_fn = tf.function(self.baseline.fit_predict)

    # ----------------------------------------------------------------- environments
    _task_env = staticmethod(as_task_env)

    _autoreset_mode = AutoresetMode.NEXT_STEP

    # ----------------------------------------------------------------- task-batched parts
    # Every part is batched over the task axis: the tasks' weights run on their own data in
    # one vectorized forward (`ops.map_tasks`), and a loss summed over tasks differentiates
    # into each task's own gradient, since task t's term depends on its weights alone. One
    # graph therefore serves any meta-batch, and a Fisher-vector product is one pass for
    # all tasks instead of a loop of per-task passes.
    #
    # The public ones are the hooks other samplers build on (the TF-Agents agents, the
    # in-graph meta-iteration of `keras_meta.rl.graph_iteration`): `stack_weights`, `act`,
    # `dist_params`, `inner_loss`, `adapt_tasks`, `step_tasks`, `trpo_update`,
    # `ppo_update`, `outer_update`, `process` and `collection_seed`. The compiled ones
    # (`tf.function`s) may also be called inside another `tf.function`.
    @staticmethod
    def stack_weights(weights, num_tasks):
        """Per-task copies of `weights`: the task-batched layout `[num_tasks, ...]` of fast weights.

        Args:
            weights: A list of tensors, e.g. `policy.weights_list()`.
            num_tasks: Number of tasks (a Python int).

        Returns:
            A list of tensors, each `[num_tasks] + w.shape`.

        Raises:
            ValueError, TypeError: For a `num_tasks` that is not a positive integer.
        """
        num_tasks = check_positive_int(num_tasks, "num_tasks")
        return stack_copies(list(weights), num_tasks)

    def act(self, stacked, observations, seed, deterministic=False):
        """Actions of every task's policy on that task's observations (compiled).

        The sampler of `collect`: task `t` samples with the stateless seed
        `[seed[0], seed[1] * 65536 + t]`, so equal weights, observations and seed give
        equal actions wherever it is called.

        Args:
            stacked: Per-task weights, `[T, ...]` each (see `stack_weights`).
            observations: Float32 `[T, E, obs_dim]`.
            seed: Stateless sampling seed, int64 `[2]`.
            deterministic: Take the mode (mean / greedy action) instead of sampling.

        Returns:
            The policy's actions `[T, E, ...]` (policy units; see `env_actions`).
        """
        return self._act_fn(stacked, observations, seed, deterministic)

    def dist_params(self, stacked, observations):
        """Distribution parameters `[T, ..., D]` of every task's policy on its observations (compiled).

        Args:
            stacked: Per-task weights, `[T, ...]` each.
            observations: `[T, E, H, obs_dim]` (or `[T, E, obs_dim]`).

        Returns:
            The policy's distribution parameters, e.g. the `old_dist` of `trpo_update`.
        """
        return self._dist_fn(stacked, observations)

    def adapt_tasks(self, theta, batches):
        """Every task's fast weights after one inner step on each of `batches`, from `theta` (compiled).

        The training adaptation: differentiable in `theta` (second order unless
        `first_order`), replayed from the meta-weights on all batches so far.

        Args:
            theta: Meta-weights, a list of tensors in the order of `policy.trainable_variables`.
            batches: The pre-update `Batch` of each inner step, `[T, E, H, ...]` tensors.

        Returns:
            The per-task fast weights, `[T, ...]` each.
        """
        return self._adapt_fn(theta, batches)

    def step_tasks(self, stacked, batch, step_size):
        """One more inner step of every task's weights on that task's part of `batch` (compiled).

        The evaluation adaptation (`adapt`, `meta_evaluate`): from the per-task weights
        it is given, with no gradient through earlier steps, so any number of steps shares
        one trace.

        Args:
            stacked: Per-task weights, `[T, ...]` each.
            batch: A `Batch` (see `process`) sampled with `stacked`.
            step_size: The step size: a positive number or a float64 scalar tensor.

        Returns:
            The new per-task weights, `[T, ...]` each.

        Raises:
            ValueError, TypeError: For a `step_size` number that is not positive and finite.
        """
        if not tf.is_tensor(step_size):
            step_size = check_learning_rate(step_size, "step_size")
        return self._adapt_step_fn(stacked, batch, tf.convert_to_tensor(step_size, tf.float64))

    def _dist_all(self, stacked, obs):
        """Distribution parameters `[T, ..., D]` of task `t`'s weights on its observations `obs[t]`."""
        return ops.map_tasks(lambda e: self.policy.dist_params(list(e[:-1]), e[-1]), (*stacked, obs))

    @staticmethod
    def _task_means(values, masks):
        """Masked mean over each task's steps, `[T]`, of `values` `[T, E, H]`."""
        return tf.reduce_sum(values * masks, [1, 2]) / tf.maximum(tf.reduce_sum(masks, [1, 2]), 1.0)

    def inner_loss(self, stacked, batch):
        """Sum over tasks of each task's REINFORCE loss `L_in` at its own weights (graph-compatible).

        Args:
            stacked: Per-task weights, `[T, ...]` each.
            batch: A `Batch` (see `process`).

        Returns:
            A scalar tensor; its gradient in `stacked` is each task's own inner gradient.
        """
        log_p = self.policy.log_prob_from_dist(self._dist_all(stacked, batch.observations), batch.actions)
        return tf.reduce_sum(self._task_means(-log_p * batch.advantages, batch.masks))

    def _adapt_tasks(self, stacked, batches, rule=None):
        """Every task's fast weights after one inner step on each of `batches` in turn."""
        return inner.adapt(lambda params, step: self.inner_loss(params, batches[step]), stacked,
                           rule or self._rule, len(batches), first_order=self.first_order).params

    def _adapt_all(self, theta, batches):
        return self._adapt_tasks(self.stack_weights(theta, batches[0].masks.shape[0]), batches)

    def _adapt_step(self, stacked, batch, step_size):
        """One more adaptation step of every task's weights on that task's part of `batch`.

        Adaptation outside training needs no gradient through earlier steps, so it goes one
        step a call from the weights it has: one trace for any number of steps (and linear
        work in them), where `_adapt_all` replays every step from `theta`.
        """
        return self._adapt_tasks(stacked, [batch], inner.sgd(step_size))

    def _step_sizes(self, inner_lrs, steps):
        """Per-step adaptation step sizes as a float64 tensor of length `steps`, checked.

        float64, so a float64 policy steps with the same alpha as in training and a float32
        one with alpha rounded once (see `inner.cast_scalar`)."""
        if inner_lrs is None:
            return tf.constant([self.inner_lr] * steps, tf.float64)
        try:
            lrs = [float(lr) for lr in inner_lrs]
        except (TypeError, ValueError):
            lrs = None
        if lrs is None or len(lrs) < steps or not all(math.isfinite(lr) and lr > 0 for lr in lrs):
            raise ValueError(f"Expected `inner_lrs` to hold at least {steps} positive step sizes, one per "
                             f"adaptation step. Received: inner_lrs={inner_lrs!r}")
        return tf.constant(lrs[:steps], tf.float64)

    def _act(self, stacked, obs, seed, deterministic):
        dist = self._dist_all(stacked, obs)
        if deterministic:
            return self.policy.mode_from_dist(dist)
        return tf.stack([self.policy.sample_from_dist(dist[t], tf.stack([seed[0], seed[1] * 65536 + t]))
                         for t in range(obs.shape[0])])

    def _outer_terms(self, theta, batches, outer, old_dist, clip=False):
        """Surrogate and mean KL, each the mean over tasks, at meta-weights `theta`."""
        dist = self._dist_all(self._adapt_all(theta, batches), outer.observations)
        ratio = tf.exp(self.policy.log_prob_from_dist(dist, outer.actions)
                       - self.policy.log_prob_from_dist(old_dist, outer.actions))
        objective = (ppo.clipped_surrogate(ratio, outer.advantages, self.clip_ratio) if clip
                     else ratio * outer.advantages)
        return (-tf.reduce_mean(self._task_means(objective, outer.masks)),
                tf.reduce_mean(self._task_means(self.policy.kl_from_dist(old_dist, dist), outer.masks)))

    def _surrogate_grad(self, theta, batches, outer, old_dist, clip=False):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(theta)
            surrogate, kl = self._outer_terms(theta, batches, outer, old_dist, clip)
        return surrogate, kl, tape.gradient(surrogate, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def _fvp_data(self, batches, outer, old_dist):
        """The batches the Fisher-vector products see: every `fvp_subsample`-th step."""
        k = self.fvp_subsample
        if k == 1:
            return batches, outer, old_dist
        every = lambda batch: Batch(*(x[:, :, ::k] for x in batch))
        return [every(b) for b in batches], every(outer), old_dist[:, :, ::k]

    def _fvp(self, theta, vector, batches, outer, old_dist):
        """`F v`: the Hessian of the mean KL(pi_old || pi_phi(theta)) over tasks at theta times
        `vector`, in Gauss-Newton form `J^T H_kl J v` (exact where old = new, since the KL's
        gradient in distribution parameters vanishes there). `J v` comes from a forward
        accumulator and `J^T u` from one reverse pass, so the adaptation is differentiated
        once less than in a reverse-over-reverse Hessian-vector product. With
        `fvp_subsample=k` the product runs on every k-th step of every episode."""
        batches, outer, old_dist = self._fvp_data(batches, outer, old_dist)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(theta)
            with tf.autodiff.ForwardAccumulator(theta, vector) as acc:
                dist = self._dist_all(self._adapt_all(theta, batches), outer.observations)
        jv = acc.jvp(dist, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        metric_jv = trpo.kl_hessian_vector_product(
            lambda at: tf.reduce_mean(self._task_means(self.policy.kl_from_dist(old_dist, at), outer.masks)),
            old_dist, jv)
        return tape.gradient(dist, theta, output_gradients=tf.stop_gradient(metric_jv),
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def trpo_update(self, theta, batches, outer, old_dist):
        """One TRPO step from `theta` as a pure function of tensors (graph-compatible).

        The gradient, the whole conjugate-gradient solve and the line search run in one
        graph under `tf.function`, so the inner step's graph is traced once and reused by
        every Fisher-vector product.

        Args:
            theta: Meta-weights, a list of tensors in the order of `policy.trainable_variables`.
            batches: The pre-update `Batch` of each inner step.
            outer: The post-update `Batch`.
            old_dist: The sampling (post-update) policy's distribution parameters on
                `outer.observations`.

        Returns:
            `(candidate, accepted, logs)`: the new weights (theta where no step was
            accepted), a boolean scalar, and a dict of scalar tensors `surrogate_before`,
            `surrogate_after`, `kl`, `line_search_steps`.
        """
        surrogate0, _, grads = self._surrogate_grad(theta, batches, outer, old_dist)
        candidate, accepted, surrogate, kl, steps = trpo.trust_region_step(
            theta, surrogate0, grads, lambda v: self._fvp(theta, v, batches, outer, old_dist),
            lambda c: self._outer_terms(c, batches, outer, old_dist), self.max_kl, self.cg_iters, self.cg_damping,
            self.ls_backtrack, self.ls_max_steps)
        return candidate, accepted, {"surrogate_before": surrogate0, "surrogate_after": surrogate, "kl": kl,
                                     "line_search_steps": steps}

    def ppo_update(self, batches, outer, old_dist):
        """One PPO optimizer step on the clipped surrogate through the inner steps (graph-compatible).

        The step is applied to the policy's variables unless the loss or a gradient is not
        finite; `outer_update` runs `ppo_epochs` of them.

        Args:
            batches: The pre-update `Batch` of each inner step.
            outer: The post-update `Batch`.
            old_dist: The sampling policy's distribution parameters on `outer.observations`.

        Returns:
            `(loss, kl)`: the clipped surrogate loss and the mean KL, scalar tensors.
        """
        variables = self.policy.trainable_variables
        loss, kl, grads = self._surrogate_grad(ops.variable_values(variables), batches, outer, old_dist, clip=True)
        apply_if_finite(lambda: self.optimizer.apply(grads, variables), loss, grads)
        return loss, kl

    # ----------------------------------------------------------------- sampling
    def collect(self, stacked, tasks, episodes, seed, deterministic=False, env=None):
        """Samples `episodes` episodes per task with per-task weights `stacked` ([T, ...] each).

        Returns:
            A filled `RolloutBuffer` with one episode per (task, env) row.
        """
        tasks, episodes, seed = check_tasks(tasks), check_positive_int(episodes, "episodes"), check_seed(seed)
        num_tasks = len(tasks)

        def act(obs, seed):
            obs = tf.constant(np.asarray(obs, np.float32).reshape((num_tasks, episodes, -1)))
            actions = self._act_fn(stacked, obs, seed, deterministic).numpy()
            return actions.reshape((num_tasks * episodes,) + actions.shape[2:])

        return self._rollout(self.env if env is None else env, tasks, episodes, self.horizon, seed, act,
                             max_episodes_per_env=1)

    def process(self, buffer):
        """Baseline fit, GAE and per-task advantage normalisation of a filled buffer.

        Returns:
            A `Batch` of tensors.
        """
        d = buffer.data()
        returns = buffer.discounted_returns(self.gamma)
        values, next_values = self._baseline_fn(d["observations"], d["next_observations"], d["episode_steps"],
                                                returns, d["masks"])
        adv, _ = buffer.gae(values.numpy(), next_values.numpy(), self.gamma, self.gae_lambda)
        masks = d["masks"]
        if self.normalize_advantages:
            adv = standardize_advantages(adv, masks, axis=(1, 2))
        obs = d["observations"].reshape(d["observations"].shape[:3] + (-1,))
        return Batch(tf.constant(obs), tf.constant(d["actions"]), tf.constant(adv), tf.constant(masks),
                     tf.constant(d["episode_steps"]))

    # ----------------------------------------------------------------- training
    def train_step(self, tasks, episodes_per_task=20):
        """One meta-iteration on `tasks`; returns a dict of logs."""
        tasks, episodes_per_task = check_tasks(tasks), check_positive_int(episodes_per_task, "episodes_per_task")
        it = self.iteration
        theta = self.policy.weights_list()
        stacked = self.stack_weights(theta, len(tasks))
        batches, logs = [], {}
        for k in range(self.inner_steps):
            buffer = self.collect(stacked, tasks, episodes_per_task, self.collection_seed(it, k))
            if k == 0:
                logs["pre_return"] = float(buffer.episode_returns().mean())
            batches.append(self.process(buffer))
            stacked = self._adapt_fn(theta, batches)
        buffer = self.collect(stacked, tasks, episodes_per_task, self.collection_seed(it, self.inner_steps))
        logs["post_return" if self.inner_steps else "pre_return"] = float(buffer.episode_returns().mean())
        logs.update(self.outer_update(theta, batches, self.process(buffer), stacked))
        # Only now: an iteration that raised leaves the counter, so a retry draws its tasks again.
        self.iteration = it + 1
        return logs

    def collection_seed(self, iteration, phase):
        """The sampling seed `train_step` collects with in one phase of meta-iteration `iteration`.

        Args:
            iteration: The meta-iteration index.
            phase: `k < inner_steps` for the pre-update collection of inner step `k`,
                `inner_steps` for the post-update collection.

        Returns:
            The seed (an int) `collect` is called with.

        Raises:
            ValueError, TypeError: For a negative `iteration` or a `phase` outside
                `[0, inner_steps]`.
        """
        iteration = check_steps(iteration, "iteration", allow_zero=True)
        phase = check_steps(phase, "phase", allow_zero=True)
        if phase > self.inner_steps:
            raise ValueError(f"Expected `phase` in [0, inner_steps={self.inner_steps}]. Received: phase={phase}")
        return self._seed(iteration, 1, phase) if phase < self.inner_steps else self._seed(iteration, 2)

    def outer_update(self, theta, batches, outer, stacked):
        """The outer step of a meta-iteration: TRPO, or `ppo_epochs` PPO steps.

        `train_step` runs it on the batches it samples, and
        `keras_meta.integrations.tf_agents.MAMLAgent.train` on batches a TF-Agents driver
        collected; the iteration counter is the caller's to advance.

        Args:
            theta: The meta-weights the iteration started from.
            batches: The pre-update `Batch` of each inner step.
            outer: The post-update `Batch`, sampled with `stacked`.
            stacked: Every task's adapted weights (`[T, ...]` each) that sampled `outer`.

        Returns:
            A dict of logs: TRPO `surrogate_before`, `surrogate_after`, `kl`,
            `line_search_steps`; PPO `loss`, `kl`.
        """
        old_dist = self._dist_fn(stacked, outer.observations)
        if self.outer == "trpo":
            return self.trpo_step(theta, batches, outer, old_dist)
        for _ in range(self.ppo_epochs):
            loss, kl = self._ppo_fn(batches, outer, old_dist)
        return {"loss": float(loss), "kl": float(kl)}

    def trpo_step(self, theta, batches, outer, old_dist):
        """One TRPO update of the meta-weights (see the class docstring); returns logs."""
        candidate, accepted, logs = self._trpo_fn(theta, batches, outer, old_dist)

        def assign():
            for variable, value in zip(self.policy.trainable_variables, candidate):
                variable.assign(value)

        if accepted:
            apply_if_finite(assign, logs["surrogate_after"], candidate)
        return {k: int(v) if k == "line_search_steps" else float(v) for k, v in logs.items()}

    def evaluation_probe(self, options):
        """What `keras_meta.evaluation.evaluate` measures of this learner."""
        from keras_meta.evaluation.probes import MAMLRLProbe

        return MAMLRLProbe(self, options)

    def fit(self, epochs=1, meta_batch_size=20, episodes_per_task=20, steps_per_epoch=1, callbacks=None,
            verbose=1):
        """Meta-trains for `epochs * steps_per_epoch` meta-iterations.

        Tasks of meta-iteration `i` come from `env.sample_tasks(meta_batch_size, seed_i)`
        with `seed_i` derived from the run seed, and `i` is the tracked counter
        `training_state.iteration`, so a run is reproducible and a run restored from a
        checkpoint continues the same task sequence.

        Args:
            epochs: Number of epochs.
            meta_batch_size: Tasks per meta-iteration (20 in the paper).
            episodes_per_task: Episodes per task and phase (20 for navigation in the paper).
            steps_per_epoch: Meta-iterations per epoch.
            callbacks: Keras callbacks. They see `training_state` (the policy as
                `self.model.policy`, the PPO optimizer and the iteration counter) as
                `self.model`, so `keras.callbacks.BackupAndRestore` resumes exactly.
            verbose: 0 silent, 1 a progress bar per epoch.

        Returns:
            A `keras.callbacks.History` of per-epoch mean logs.
        """
        episodes_per_task = check_positive_int(episodes_per_task, "episodes_per_task")
        return self._fit(lambda tasks: self.train_step(tasks, episodes_per_task), meta_batch_size, epochs,
                         steps_per_epoch, callbacks, verbose)

    # ----------------------------------------------------------------- adaptation
    def adapt(self, env=None, task=None, episodes=20, steps=1, seed=0, inner_lrs=None):
        """Adapts the policy to `task` with `steps` policy-gradient steps.

        Args:
            env: Task environment to sample from (default: the training env).
            task: The task (default: `env.get_task()`).
            episodes: Episodes sampled per inner step.
            steps: Number of inner steps.
            seed: Sampling seed.
            inner_lrs: Step size of each adaptation step (default: `inner_lr` for all). The
                MAML paper evaluates with `(alpha, alpha / 2, alpha / 2, ...)`.

        Returns:
            A new policy (Keras model) holding the adapted weights; the meta-weights are untouched.
        """
        episodes, seed = check_positive_int(episodes, "episodes"), check_seed(seed)
        steps = check_steps(steps, "steps", allow_zero=True)
        step_sizes = self._step_sizes(inner_lrs, steps)
        env = self.env if env is None else self._task_env(env)
        task = _find_attr(env, "get_task")() if task is None else task
        theta = self.policy.weights_list()
        stacked = self.stack_weights(theta, 1)
        for k in range(steps):
            buffer = self.collect(stacked, [task], episodes, self._seed(seed, 3, k), env=env)
            stacked = self._adapt_step_fn(stacked, self.process(buffer), step_sizes[k])
        return self.policy.adapted([w[0] for w in stacked])

    def adapt_step(self, policy, buffer, step_size=None):
        """One inner policy-gradient step from `policy`'s weights on episodes sampled elsewhere.

        `phi' = phi - step_size * grad L_in(phi; D)` with `D` the episodes of `buffer`
        (processed like training data: baseline, GAE, normalisation). For samplers other
        than `collect`, e.g. TF-Agents drivers.

        Args:
            policy: The policy to adapt from: `learner.policy` or one returned by `adapt`
                or an earlier `adapt_step`.
            buffer: A filled `RolloutBuffer` of one task (`num_tasks=1`) sampled with `policy`.
            step_size: The step size (default: `inner_lr`).

        Returns:
            A new policy (Keras model) holding the adapted weights; `policy` is untouched.

        Raises:
            ValueError: For a step size that is not a positive finite number.
        """
        if step_size is not None:
            step_size = check_learning_rate(step_size, "step_size")
        step_sizes = self._step_sizes(None if step_size is None else [step_size], 1)
        stacked = self._adapt_step_fn(self.stack_weights(policy.weights_list(), 1), self.process(buffer),
                                      step_sizes[0])
        return self.policy.adapted([w[0] for w in stacked])

    def export_adaptive(self, path):
        """Writes the policy's adaptation as a SavedModel that plain TensorFlow runs.

        Signatures `adapt(observations, actions, advantages)` (one inner policy-gradient
        step from the meta-weights on one task's transitions), `action(observation,
        weights_0, ...)` and `action_meta(observation)`, and a TF-Agents policy in
        `PolicySaver`'s conventions (`action(time_step, policy_state)`,
        `get_initial_state`, `adapt_state`, `get_train_step`, `get_metadata`, with
        `policy_specs.pbtxt`) whose policy state is the adapted weights, one set per batch
        row, so TF-Agents' `SavedModelPyTFEagerPolicy` drives the adapted policy: see
        `keras_meta.rl.policy_export.export_adaptive_policy`.

        Args:
            path: Directory to write the SavedModel to.

        Returns:
            The saved `tf.Module`.
        """
        from keras_meta.rl import policy_export

        return policy_export.export_adaptive_policy(self, path)

    def evaluate_episodes(self, env, task, adaptation_episodes, eval_episodes, seed=0, deterministic=False):
        """Returns and successes of `eval_episodes` episodes after adapting on `adaptation_episodes`.

        One policy-gradient step on `adaptation_episodes` episodes of `task` (none for 0),
        then the evaluation episodes with the adapted policy, one at a time on `env` (the
        Meta-World protocol, `keras_meta.rl.meta_evaluate_episodes`).

        Args:
            env: The task environment (not a vector env).
            task: The task.
            adaptation_episodes: Episodes sampled for the adaptation step (non-negative).
            eval_episodes: Evaluated episodes.
            seed: Sampling seed (episode `e` resets with `seed + e`).
            deterministic: Evaluate the mean action (adaptation always samples).

        Returns:
            `(returns, successes)`: lists of `eval_episodes` floats and bools.
        """
        adaptation_episodes, eval_episodes, seed = check_evaluation(adaptation_episodes, eval_episodes, seed)
        _find_attr(env, "set_task")(task)
        policy = self.policy
        if adaptation_episodes > 0:
            policy = self.adapt(env=env, task=task, episodes=adaptation_episodes, steps=1, seed=seed)
        counter = [0]

        def act(obs):
            obs = tf.constant(np.asarray(obs, np.float32).reshape(1, -1))
            if deterministic:
                return policy.mode(None, obs).numpy()[0]
            counter[0] += 1
            return policy.sample(None, obs, tf.constant([seed % (2**31), counter[0]], tf.int64)).numpy()[0]

        _find_attr(env, "set_task")(task)
        out = [self._episode(env, act, seed + e) for e in range(eval_episodes)]
        return [o[0] for o in out], [o[1] for o in out]

    def _adaptation_session(self, num_envs, next_seed):
        # Every row starts at the meta-policy; each `adapt` is one `adapt_step` per row.
        return PolicySession(self.policy, self.observation_shape, num_envs, next_seed, adapt_step=self.adapt_step)

    def meta_evaluate(self, tasks, steps=(0, 1, 2, 3), episodes=20, seed=0, inner_lrs=None):
        """Mean undiscounted return after each number of adaptation steps on `tasks`.

        Args:
            tasks: Held-out tasks (e.g. `env.sample_tasks(40, seed=...)`).
            steps: Step counts to report.
            episodes: Episodes per task and step.
            seed: Sampling seed.
            inner_lrs: Step size of each adaptation step (default: `inner_lr` for all).

        Returns:
            A dict `{steps: mean return}`.
        """
        tasks, episodes, seed = check_tasks(tasks), check_positive_int(episodes, "episodes"), check_seed(seed)
        steps = sorted(check_steps(s, "steps", allow_zero=True) for s in steps)
        if not steps:
            raise ValueError(f"Expected `steps` to hold at least one step count. Received: steps={steps!r}")
        step_sizes = self._step_sizes(inner_lrs, steps[-1])
        theta = self.policy.weights_list()
        stacked, results = self.stack_weights(theta, len(tasks)), {}
        for k in range(steps[-1] + 1):
            buffer = self.collect(stacked, tasks, episodes, self._seed(seed, 4, k))
            if k in steps:
                results[k] = float(buffer.episode_returns().mean())
            if k == steps[-1]:
                break
            stacked = self._adapt_step_fn(stacked, self.process(buffer), step_sizes[k])
        return results
