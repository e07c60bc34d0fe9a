"""Meta-gradient RL (Xu, van Hasselt & Silver, 2018): discount and GAE lambda learned online.

`generalized_advantages` is GAE / the lambda-return in TF ops, differentiable in `gamma`
and `lam` (the C++ `RolloutBuffer.gae` computes the same numbers without gradients).
`MetaGradientPG` is an actor-critic whose update uses returns at the meta-parameters
(gamma, lambda) and which adjusts them by the gradient of a meta-objective on the next
batch, computed at fixed reference values (gamma', lambda').
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from gymnasium.vector import AutoresetMode

from keras_meta import ops
from keras_meta._validation import check_learning_rate, check_model, check_positive_int, check_seed
from keras_meta.rl._loop import RLLearner, TrainingState, keras_style_loop
from keras_meta.rl.adaptation import PolicySession
from keras_meta.rl.envs import as_task_env

_META_PARAMETERS = ("gamma", "lambda")

Trajectories = collections.namedtuple(
    "Trajectories", ["observations", "actions", "rewards", "next_observations", "terminated", "truncated", "masks"])
Trajectories.__doc__ = """Tensors `[E, H, ...]` of one batch of episodes (masks: 1 on recorded steps)."""


def generalized_advantages(rewards, values, next_values, terminated, truncated, masks, gamma, lam):
    """GAE advantages and lambda-returns over the last axis, differentiable in `gamma`, `lam`.

    `delta_t = r_t + gamma * V_next_t - V(s_t)`, `A_t = delta_t + gamma * lam * A_{t+1}`,
    restarted at each episode end, `G_t = A_t + V(s_t)` (the lambda-return), with
    `V_next_t = V(s_{t+1})` inside an episode, 0 after a termination and `next_values_t`
    after a truncation or where a row stops mid-episode: the conventions of
    `keras_meta.rl.RolloutBuffer.gae`. Steps with mask 0 get 0.

    Args:
        rewards, values, next_values: Float tensors `[..., H]` (`next_values`: V of the
            step's next observation, read at truncations and row ends only).
        terminated, truncated: Bool tensors `[..., H]`.
        masks: `[..., H]`, 1 on recorded steps (a prefix of each row).
        gamma, lam: Scalars (Python numbers or tensors; gradients flow to tensors).

    Returns:
        `(advantages, returns)`, each `[..., H]` in the dtype of `values`.

    Example:

    >>> adv, ret = generalized_advantages(r, v, v_next, term, trunc, masks, 0.99, 0.95)  # doctest: +SKIP
    """
    values = tf.convert_to_tensor(values)
    dtype = values.dtype
    rewards, next_values = tf.cast(rewards, dtype), tf.cast(next_values, dtype)
    # A Python number straight in `dtype` (tf.cast would round it through float32 first).
    gamma, lam = (tf.cast(x, dtype) if tf.is_tensor(x) else tf.constant(x, dtype) for x in (gamma, lam))
    valid = tf.cast(masks, dtype) > 0
    terminated, truncated = tf.cast(terminated, tf.bool), tf.cast(truncated, tf.bool)
    next_valid = tf.concat([valid[..., 1:], tf.zeros_like(valid[..., :1])], -1)
    ends = terminated | truncated | ~next_valid
    following = tf.concat([values[..., 1:], tf.zeros_like(values[..., :1])], -1)
    bootstrap = tf.where(terminated, tf.zeros_like(values), tf.where(ends, next_values, following))
    deltas = rewards + gamma * bootstrap - values
    carry = gamma * lam * (1.0 - tf.cast(ends, dtype))
    # Reverse scan over time (moved to the front): A_t = delta_t + carry_t * A_{t+1}.
    rank = values.shape.rank
    perm = [rank - 1] + list(range(rank - 1))
    advantages = tf.scan(lambda acc, x: x[0] + x[1] * acc,
                         (tf.transpose(deltas, perm), tf.transpose(carry, perm)),
                         initializer=tf.zeros_like(deltas[..., 0]), reverse=True)
    advantages = tf.transpose(advantages, list(range(1, rank)) + [0])
    zeros = tf.zeros_like(values)
    return tf.where(valid, advantages, zeros), tf.where(valid, advantages + values, zeros)


def _probability(value, name, closed=False):
    # Meta-learned values live in the open interval (a sigmoid's range); references may be 0 or 1.
    inside = (0.0 <= value <= 1.0) if closed else (0.0 < value < 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not inside:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"Expected `{name}` to be a number in {interval}. Received: {name}={value!r}")
    return float(value)


def _logit(p):
    return float(np.log(p) - np.log1p(-p))


class MetaGradientPG(RLLearner):
    """Actor-critic with the discount and GAE lambda meta-learned online (Xu et al., 2018).

    Each iteration samples a batch `tau` of `episodes` episodes with the current weights
    `theta` (policy and critic) and applies the update

        theta' = theta - lr * grad_theta L(tau, theta; gamma, lambda),
        L = -mean[log pi(a|s) (G - V(s))] + value_coef * mean[(G - V(s))^2] / 2
            - entropy_coef * mean[H(pi(.|s))],

    where `G` are the lambda-returns `generalized_advantages(..., gamma, lambda)` over the
    critic's values (held fixed in theta, not in gamma and lambda). The meta-parameters
    move by the gradient of the same loss on the next batch `tau'` (sampled with
    `theta'`) with targets at fixed reference values, `J'(tau', theta'(gamma, lambda);
    gamma', lambda')` (its returns and baseline held fixed, so its gradient in theta' is
    the policy gradient), differentiated through the update: `dJ'/d eta = dJ'/d theta' *
    d theta'/d eta` (the paper's online cross-validation with its trace decay mu = 0).
    `gamma = sigmoid(eta_gamma)` and `lambda = sigmoid(eta_lambda)` are updated by
    `meta_optimizer`; `tau'` is the next iteration's `tau`, so each iteration samples once.

    Unlike the paper's IMPALA agent, the policy and critic are not conditioned on
    (gamma, lambda), and it learns one task of a task environment (`task`).

    Args:
        policy: A `GaussianPolicy` or `CategoricalPolicy` for the env's spaces.
        env: A task environment (e.g. `Navigation2D`) or a function returning one.
        critic: A Keras model from observations `[n, obs_dim]` to values `[n, 1]`
            (default: one hidden layer of 32 tanh units).
        task: The task learned (default: `env.sample_tasks(1, seed)[0]`).
        gamma, gae_lambda: Initial meta-parameters, in (0, 1).
        meta_learn: Which of "gamma" and "lambda" are meta-learned (the others stay fixed).
        reference_gamma, reference_lambda: gamma', lambda' of the meta-objective, in
            [0, 1] (default: the initial values; the paper takes lambda' = 1).
        lr: Step size of the update.
        meta_optimizer: Keras optimizer of the meta-parameters' logits (default Adam(1e-2)).
        value_coef, entropy_coef: Loss weights.
        episodes: Episodes per batch.
        horizon: Episode length (default: the env's `horizon`).
        seed: Run seed (task, sampling noise).

    Raises:
        ValueError, TypeError: On a bad argument, before anything is built.

    Example:

    ```python
    env = km.rl.Navigation2D(horizon=20)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(32, "tanh"), keras.layers.Dense(2)])
    learner = km.rl.MetaGradientPG(km.rl.GaussianPolicy(body, 2), env, gamma=0.9, gae_lambda=0.9)
    learner.fit(epochs=5, steps_per_epoch=10)
    print(learner.gamma, learner.gae_lambda)
    ```
    """

    _autoreset_mode = AutoresetMode.NEXT_STEP

    def __init__(self, policy, env, critic=None, task=None, gamma=0.99, gae_lambda=0.95,
                 meta_learn=_META_PARAMETERS, reference_gamma=None, reference_lambda=None, lr=0.05,
                 meta_optimizer=None, value_coef=0.5, entropy_coef=0.0, episodes=8, horizon=None, seed=0):
        ops.check_tensorflow_backend()
        gamma, gae_lambda = _probability(gamma, "gamma"), _probability(gae_lambda, "gae_lambda")
        meta_learn = tuple(meta_learn) if isinstance(meta_learn, (list, tuple)) else meta_learn
        if not isinstance(meta_learn, tuple) or not set(meta_learn) <= set(_META_PARAMETERS):
            raise ValueError(f"Expected `meta_learn` to be a tuple of names from {_META_PARAMETERS}. "
                             f"Received: meta_learn={meta_learn!r}")
        self.reference_gamma = gamma if reference_gamma is None else _probability(reference_gamma, "reference_gamma", True)
        self.reference_lambda = (gae_lambda if reference_lambda is None
                                 else _probability(reference_lambda, "reference_lambda", True))
        self.lr = check_learning_rate(lr, "lr")
        for name, value in (("value_coef", value_coef), ("entropy_coef", entropy_coef)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"Expected `{name}` to be a non-negative number. Received: {name}={value!r}")
        self.value_coef, self.entropy_coef = float(value_coef), float(entropy_coef)
        self.episodes = check_positive_int(episodes, "episodes")
        self.seed = check_seed(seed)
        if horizon is not None:
            horizon = check_positive_int(horizon, "horizon")
        self.env = as_task_env(env)
        self.horizon = int(horizon or getattr(self.env, "horizon", None) or self.env.spec.max_episode_steps)
        obs_space, act_space = self._spaces(self.env)
        self._check_policy_spaces(policy, obs_space, act_space)
        self._set_action_mapping(act_space, policy.discrete, False)
        obs_dim = int(np.prod(obs_space.shape))
        if not getattr(policy, "built", False) or not hasattr(policy, "observation_dim"):
            policy.build_for(obs_dim)
        if critic is None:
            critic = keras.Sequential([keras.Input((obs_dim,)), keras.layers.Dense(32, activation="tanh"),
                                       keras.layers.Dense(1)])
        check_model(critic)
        self.policy, self.critic, self.meta_learn = policy, critic, meta_learn
        self.task = self.env.sample_tasks(1, seed=self.seed)[0] if task is None else task
        dtype = policy.trainable_variables[0].dtype
        self.meta_variables = {
            "gamma": keras.Variable(_logit(gamma), dtype=dtype, trainable="gamma" in meta_learn, name="gamma_logit"),
            "lambda": keras.Variable(_logit(gae_lambda), dtype=dtype, trainable="lambda" in meta_learn,
                                     name="lambda_logit")}
        self.meta_optimizer = meta_optimizer or keras.optimizers.Adam(1e-2)
        learned = [self.meta_variables[n] for n in _META_PARAMETERS if n in meta_learn]
        if learned:
            self.meta_optimizer.build(learned)
        self.optimizer = None
        self._venvs = {}
        self.training_state = TrainingState(policy)
        self._next = None
        self._act_fn = tf.function(self._act)
        self._update_fn = tf.function(self.update)
        self._step_fn = tf.function(self._step)

    # ----------------------------------------------------------------- meta-parameters
    @property
    def gamma(self):
        """The current discount."""
        return float(tf.sigmoid(self.meta_variables["gamma"]).numpy())

    @property
    def gae_lambda(self):
        """The current GAE lambda."""
        return float(tf.sigmoid(self.meta_variables["lambda"]).numpy())

    # ----------------------------------------------------------------- functional parts
    def weights(self):
        """Current values of the policy's then the critic's trainable weights."""
        return self.policy.weights_list() + ops.variable_values(self.critic.trainable_variables)

    def _values(self, critic_params, obs):
        flat = tf.reshape(obs, [-1, obs.shape[-1]])
        out, _ = ops.forward(self.critic, critic_params, ops.variable_values(self.critic.non_trainable_variables),
                             flat, training=False)
        return tf.reshape(out, tf.shape(obs)[:-1])

    def targets(self, params, batch, gamma, lam):
        """`(lambda-returns, values)` `[E, H]` of `batch` at `params`' critic.

        The critic's values enter as constants in the weights (a bootstrapped target), the
        returns stay differentiable in `gamma` and `lam`.
        """
        critic_params = params[len(self.policy.trainable_variables):]
        values = tf.stop_gradient(self._values(critic_params, batch.observations))
        next_values = tf.stop_gradient(self._values(critic_params, batch.next_observations))
        returns = generalized_advantages(batch.rewards, values, next_values, batch.terminated, batch.truncated,
                                         batch.masks, gamma, lam)[1]
        return returns, values

    def loss(self, params, batch, targets):
        """The actor-critic loss of `params` on `batch` given `targets = (returns, baseline)`.

        `-mean[log pi(a|s) (returns - baseline)] + value_coef * mean[(returns - V(s))^2] / 2
        - entropy_coef * mean[H]`, means over the recorded steps.

        Args:
            params: Tensors in the order of `weights()`.
            batch: `Trajectories`.
            targets: `(returns, baseline)` from `targets`.

        Returns:
            A scalar tensor.
        """
        n = len(self.policy.trainable_variables)
        policy_params, critic_params = params[:n], params[n:]
        returns, baseline = targets
        values = self._values(critic_params, batch.observations)
        log_p = self.policy.log_prob_from_dist(self.policy.dist_params(policy_params, batch.observations),
                                               batch.actions)
        masks = tf.cast(batch.masks, values.dtype)
        mean = lambda x: tf.reduce_sum(x * masks) / tf.maximum(tf.reduce_sum(masks), 1.0)
        loss = -mean(log_p * (returns - baseline)) + self.value_coef * 0.5 * mean(tf.square(returns - values))
        if self.entropy_coef:
            loss -= self.entropy_coef * mean(self.policy.entropy(policy_params, batch.observations))
        return loss

    def update(self, params, batch, gamma, lam):
        """`theta' = theta - lr * grad L(batch, theta; gamma, lam)`, differentiable in gamma, lam."""
        targets = self.targets(params, batch, gamma, lam)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loss = self.loss(params, batch, targets)
        grads = tape.gradient(loss, params)
        return [p - tf.cast(self.lr, p.dtype) * g for p, g in zip(params, grads)]

    def meta_objective(self, params, batch, next_batch, gamma, lam, reference_targets):
        """`J' = loss(update(params, batch, gamma, lam), next_batch, reference_targets)`.

        `reference_targets` are `targets(theta', next_batch, gamma', lambda')` at the
        updated weights, held fixed: `dJ'/dgamma` is then the paper's meta-gradient, the
        policy gradient at theta' (advantages as constants) chained through the update.
        """
        return self.loss(self.update(params, batch, gamma, lam), next_batch, reference_targets)

    def meta_gradient(self, params, batch, next_batch, gamma, lam):
        """`(J', dJ'/dgamma, dJ'/dlam, theta')`: the meta-objective, its gradients in gamma and
        lambda through the update, and the updated weights."""
        gamma, lam = tf.convert_to_tensor(gamma), tf.convert_to_tensor(lam)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([gamma, lam])
            updated = self.update(params, batch, gamma, lam)
            reference = self.targets([tf.stop_gradient(u) for u in updated], next_batch, self.reference_gamma,
                                      self.reference_lambda)
            objective = self.loss(updated, next_batch, reference)
        d_gamma, d_lam = tape.gradient(objective, [gamma, lam])
        return objective, d_gamma, d_lam, updated

    def _step(self, params, batch, next_batch, logits):
        gamma, lam = tf.sigmoid(logits[0]), tf.sigmoid(logits[1])
        objective, d_gamma, d_lam, updated = self.meta_gradient(params, batch, next_batch, gamma, lam)
        # Chain rule through the sigmoids: d sigmoid(x) / dx = s (1 - s).
        return objective, [d_gamma * gamma * (1 - gamma), d_lam * lam * (1 - lam)], updated

    # ----------------------------------------------------------------- sampling
    def _act(self, params, obs, seed):
        n = len(self.policy.trainable_variables)
        return self.policy.sample(params[:n], obs, seed)

    def collect(self, params, seed):
        """`episodes` episodes of `task` with weights `params`.

        Returns:
            `(Trajectories, mean undiscounted episode return)`.
        """
        buffer = self._rollout(self.env, [self.task], self.episodes, self.horizon, seed,
                               lambda obs, s: self._act_fn(params, tf.constant(np.asarray(obs, np.float32)),
                                                           s).numpy(),
                               max_episodes_per_env=1)
        d = buffer.data()
        obs = lambda key: tf.constant(d[key][0].reshape(d[key].shape[1:3] + (-1,)))
        return Trajectories(obs("observations"), tf.constant(d["actions"][0]), tf.constant(d["rewards"][0]),
                            obs("next_observations"), tf.constant(d["terminated"][0]),
                            tf.constant(d["truncated"][0]), tf.constant(d["masks"][0])), \
            float(buffer.episode_returns().mean())

    # ----------------------------------------------------------------- training
    def train_step(self):
        """One update of the weights and one meta-update of (gamma, lambda); returns logs."""
        it = self.iteration
        params = self.weights()
        # The previous iteration's next batch was sampled with these very weights.
        batch, mean_return = self._next if self._next is not None else self.collect(params, self._seed(it, 0))
        logits = [tf.convert_to_tensor(self.meta_variables[name]) for name in _META_PARAMETERS]
        # theta' from the update on `batch`; the meta-objective needs a batch sampled with it.
        updated = self._update_fn(params, batch, tf.sigmoid(logits[0]), tf.sigmoid(logits[1]))
        self._next = self.collect(updated, self._seed(it, 1))
        objective, grads, updated = self._step_fn(params, batch, self._next[0], logits)
        learned = [(g, self.meta_variables[name]) for g, name in zip(grads, _META_PARAMETERS)
                   if name in self.meta_learn]
        if learned and all(np.isfinite(g.numpy()) for g, _ in learned) and np.isfinite(objective.numpy()):
            self.meta_optimizer.apply_gradients(learned)
        if all(np.all(np.isfinite(u.numpy())) for u in updated):
            for variable, value in zip(self.policy.trainable_variables + self.critic.trainable_variables, updated):
                variable.assign(value)
        self.iteration = it + 1
        return {"return": mean_return, "meta_objective": float(objective), "gamma": self.gamma,
                "gae_lambda": self.gae_lambda}

    def fit(self, epochs=1, steps_per_epoch=10, callbacks=None, verbose=1):
        """Runs `epochs * steps_per_epoch` iterations of `train_step`.

        Returns:
            A `keras.callbacks.History` of per-epoch mean logs (return, meta_objective,
            gamma, gae_lambda).
        """
        epochs = check_positive_int(epochs, "epochs")
        steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        return keras_style_loop(self.training_state, self.train_step, epochs, steps_per_epoch, callbacks, verbose)

    def _adaptation_session(self, num_envs, next_seed):
        # One task is learned, so nothing adapts per task: every row acts with the current
        # policy, a non-adapting baseline in a meta-evaluation protocol.
        return PolicySession(self.policy, (self.policy.observation_dim,), num_envs, next_seed)

    def evaluate_return(self, episodes=None, seed=0):
        """Mean undiscounted return of `episodes` (default: `self.episodes`) sampled episodes on `task`."""
        saved = self.episodes
        self.episodes = saved if episodes is None else check_positive_int(episodes, "episodes")
        try:
            return self.collect(self.weights(), self._seed(check_seed(seed), 2))[1]
        finally:
            self.episodes = saved
