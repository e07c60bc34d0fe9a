"""Stochastic policies over Keras 3 models, evaluated at explicit (fast) weights.

A policy is itself a `keras.Model` whose output is the distribution's parameters
(Gaussian: `concat([mean, log_std])`; categorical: logits). Every method takes the weights
as an explicit list of tensors in the order of `policy.trainable_variables`, and runs the
model through `keras_meta.ops.forward` (`model.stateless_call`), so the same code
serves the meta-weights, differentiable fast weights in an inner loop, and the adapted
weights of a cloned policy. Randomness is stateless: `sample(..., seed)` is a pure
function of its seed (`tf.random.stateless_*`).

`RL2Policy`, the recurrent policy and value function of RL², holds its own weights and
is stepped with an explicit hidden state instead.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from gymnasium import spaces

from keras_meta import ops
from keras_meta.rl._loop import RLLearner, _positive_int

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(mean, log_std, x):
    """`log N(x; mean, exp(log_std)^2)` summed over the last axis:
    `-0.5 * sum(((x - mean) / std)^2 + 2 log_std + log 2 pi)`."""
    z = (x - mean) * tf.exp(-log_std)
    return -0.5 * tf.reduce_sum(tf.square(z) + 2.0 * log_std + _LOG_2PI, axis=-1)


def gaussian_entropy(log_std):
    """`sum(log_std + 0.5 * log(2 pi e))` over the last axis."""
    return tf.reduce_sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """`KL(p || q) = sum(log s_q - log s_p + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2)`."""
    var_p, var_q = tf.exp(2.0 * log_std_p), tf.exp(2.0 * log_std_q)
    return tf.reduce_sum(
        log_std_q - log_std_p + (var_p + tf.square(mean_p - mean_q)) / (2.0 * var_q) - 0.5, axis=-1
    )


class _Policy(keras.Model):
    """Shared machinery: forward at given weights, cloning with adapted weights."""

    def __init__(self, body, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(body, keras.Model) and not isinstance(body, keras.layers.Layer):
            raise TypeError(f"Expected `body` to be a Keras 3 model. Received: body of type {type(body).__name__}")
        self.body = body

    def get_config(self):
        config = super().get_config()
        config["body"] = keras.saving.serialize_keras_object(self.body)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["body"] = keras.saving.deserialize_keras_object(config["body"])
        return cls(**config)

    def weights_list(self):
        """Current values of the trainable weights (meta-weights), as tensors."""
        return ops.variable_values(self.trainable_variables)

    def dist_params(self, params, obs):
        """Distribution parameters at `params` for observations `[..., obs_dim]`.

        Raises:
            ValueError: For observations whose last axis is not `observation_dim` wide.
        """
        params = self.weights_list() if params is None else params
        obs = tf.convert_to_tensor(obs)
        expected = getattr(self, "observation_dim", None)
        if expected is not None and obs.shape[-1] != expected:
            raise ValueError(f"Expected observations with {expected} features in the last axis (observation_dim). "
                             f"Received: obs.shape={tuple(obs.shape)}")
        lead = tf.shape(obs)[:-1]
        flat = tf.reshape(obs, [-1, obs.shape[-1]])
        out, _ = ops.forward(self, params, ops.variable_values(self.non_trainable_variables),
                                    flat, training=False)
        return tf.reshape(out, tf.concat([lead, tf.shape(out)[-1:]], 0))

    def adapted(self, params):
        """A new policy (a Keras model) with weights `params`; this one is untouched.

        Args:
            params: Tensors in the order of `self.trainable_variables`.

        Returns:
            A policy of the same class and configuration holding `params`.
        """
        clone = type(self).from_config(self.get_config())
        clone.build_for(self.observation_dim)
        for variable, value in zip(clone.trainable_variables, params):
            variable.assign(value)
        for variable, value in zip(clone.non_trainable_variables, self.non_trainable_variables):
            variable.assign(value)
        return clone

    def build_for(self, observation_dim):
        """Builds the weights by tracing one call on a dummy batch.

        Raises:
            ValueError: For a non-positive `observation_dim`, or a body whose output does
                not have the width the distribution needs.
        """
        if isinstance(observation_dim, bool) or int(observation_dim) != observation_dim or observation_dim < 1:
            raise ValueError(f"Expected `observation_dim` to be a positive integer. "
                             f"Received: observation_dim={observation_dim!r}")
        self(tf.zeros([1, int(observation_dim)]))
        self.observation_dim = int(observation_dim)
        return self

    def _check_body_output(self, out, units, what):
        # A body of the wrong width would be broadcast (or split) into a distribution of
        # the wrong size, and train without an error.
        if out.shape.rank != 2 or out.shape[-1] != units:
            raise ValueError(f"Expected `body` to output {units} units ({what}) per observation. "
                             f"Received: a body with output shape {tuple(out.shape)}")


@keras.saving.register_keras_serializable(package="keras_meta")
class GaussianPolicy(_Policy):
    """Diagonal Gaussian policy `a ~ N(mu(s), diag(exp(log_std)^2))`.

    The log-std is a learnable state-independent Keras weight (default) or, with
    `std_head=True`, the second half of the body's output.

    Args:
        body: A Keras 3 model mapping observations to `action_dim` means (or
            `2 * action_dim` outputs with `std_head=True`).
        action_dim: Action size.
        log_std_init: Initial log-std (state-independent case).
        std_head: Read the log-std from the body's output.
        min_log_std: Lower clip of a head's log-std.

    Example:

    >>> body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> policy = GaussianPolicy(body, action_dim=2).build_for(2)
    >>> policy.sample(None, tf.zeros([3, 2]), seed=[0, 1]).shape
    TensorShape([3, 2])
    """

    discrete = False

    def __init__(self, body, action_dim, log_std_init=0.0, std_head=False, min_log_std=-5.0, **kwargs):
        super().__init__(body, **kwargs)
        self.action_dim = int(action_dim)
        self.log_std_init = float(log_std_init)
        self.std_head = bool(std_head)
        self.min_log_std = float(min_log_std)
        if not self.std_head:
            self.log_std = self.add_weight(
                shape=(self.action_dim,), initializer=keras.initializers.Constant(self.log_std_init),
                name="log_std", trainable=True,
            )

    def get_config(self):
        config = super().get_config()
        config.update(action_dim=self.action_dim, log_std_init=self.log_std_init, std_head=self.std_head,
                      min_log_std=self.min_log_std)
        return config

    def call(self, obs, training=False):
        out = self.body(obs, training=training)
        if self.std_head:
            self._check_body_output(out, 2 * self.action_dim,
                                    f"{self.action_dim} means and {self.action_dim} log-stds, std_head=True")
        else:
            self._check_body_output(out, self.action_dim, "the action means")
        if self.std_head:
            mean, log_std = out[..., : self.action_dim], out[..., self.action_dim:]
            log_std = tf.maximum(log_std, self.min_log_std)
        else:
            mean = out
            log_std = tf.zeros_like(mean) + tf.cast(self.log_std, mean.dtype)
        return tf.concat([mean, log_std], axis=-1)

    def split(self, dist):
        return dist[..., : self.action_dim], dist[..., self.action_dim:]

    def distribution(self, params, obs):
        """`(mean, log_std)` at `params`."""
        return self.split(self.dist_params(params, obs))

    def log_prob(self, params, obs, actions):
        mean, log_std = self.distribution(params, obs)
        return gaussian_log_prob(mean, log_std, tf.cast(actions, mean.dtype))

    def log_prob_from_dist(self, dist, actions):
        mean, log_std = self.split(dist)
        return gaussian_log_prob(mean, log_std, tf.cast(actions, mean.dtype))

    def entropy(self, params, obs):
        return gaussian_entropy(self.distribution(params, obs)[1])

    def kl_from_dist(self, old_dist, new_dist):
        """`KL(old || new)` per sample from two distribution-parameter tensors."""
        return gaussian_kl(*self.split(old_dist), *self.split(new_dist))

    def kl(self, old_params, params, obs):
        return self.kl_from_dist(self.dist_params(old_params, obs), self.dist_params(params, obs))

    def sample_from_dist(self, dist, seed):
        mean, log_std = self.split(dist)
        noise = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=mean.dtype)
        return mean + tf.exp(log_std) * noise

    def sample(self, params, obs, seed):
        """`mean + exp(log_std) * eps`, `eps ~ N(0, I)` from `tf.random.stateless_normal(seed)`."""
        return self.sample_from_dist(self.dist_params(params, obs), seed)

    def mode_from_dist(self, dist):
        return self.split(dist)[0]

    def mode(self, params, obs):
        """The mean action (deterministic policy)."""
        return self.mode_from_dist(self.dist_params(params, obs))


@keras.saving.register_keras_serializable(package="keras_meta")
class CategoricalPolicy(_Policy):
    """Categorical policy over `num_actions` discrete actions with logits `body(s)`.

    Args:
        body: A Keras 3 model mapping observations to `num_actions` logits.
        num_actions: Number of actions.
    """

    discrete = True

    def __init__(self, body, num_actions, **kwargs):
        super().__init__(body, **kwargs)
        self.num_actions = int(num_actions)

    def get_config(self):
        config = super().get_config()
        config.update(num_actions=self.num_actions)
        return config

    def call(self, obs, training=False):
        logits = self.body(obs, training=training)
        self._check_body_output(logits, self.num_actions, "one logit per action")
        return logits

    def distribution(self, params, obs):
        return self.dist_params(params, obs)

    def log_prob_from_dist(self, logits, actions):
        """`log softmax(logits)[a]`."""
        log_p = tf.nn.log_softmax(logits)
        return tf.gather(log_p, tf.cast(actions, tf.int32), axis=-1, batch_dims=len(log_p.shape) - 1)

    def log_prob(self, params, obs, actions):
        return self.log_prob_from_dist(self.dist_params(params, obs), actions)

    def entropy(self, params, obs):
        """`-sum(p log p)`."""
        log_p = tf.nn.log_softmax(self.dist_params(params, obs))
        return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)

    def kl_from_dist(self, old_logits, new_logits):
        """`KL(old || new) = sum(p_old (log p_old - log p_new))`."""
        log_p, log_q = tf.nn.log_softmax(old_logits), tf.nn.log_softmax(new_logits)
        return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)

    def kl(self, old_params, params, obs):
        return self.kl_from_dist(self.dist_params(old_params, obs), self.dist_params(params, obs))

    def sample_from_dist(self, logits, seed):
        """Gumbel-max sampling: `argmax(logits - log(-log U))`, `U` stateless uniform."""
        u = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-9, maxval=1.0, dtype=logits.dtype)
        return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int64)

    def sample(self, params, obs, seed):
        return self.sample_from_dist(self.dist_params(params, obs), seed)

    def mode_from_dist(self, logits):
        return tf.argmax(logits, axis=-1, output_type=tf.int64)

    def mode(self, params, obs):
        """The greedy action."""
        return self.mode_from_dist(self.dist_params(params, obs))


@keras.saving.register_keras_serializable(package="keras_meta")
class RL2Policy(keras.Model):
    """A GRU policy and value function stepped one step at a time with explicit state.

    Per step, `z = encoder(x_t)`, `h_t = GRUCell(z, h_{t-1})`, and the heads give the
    action distribution (categorical logits, or a diagonal Gaussian mean with a learnable
    state-independent log-std) and the value `V(h_t)`. The cell is `keras.layers.GRUCell`,
    a plain-TensorFlow kernel (never cuDNN), so it runs inside `tf.scan` and `tf.function`
    and exports to a SavedModel.

    The input `x_t` is `concat([obs_t, prev_action, prev_reward, prev_done])`, with the
    previous action one-hot for discrete actions, `input_dim` wide; `keras_meta.rl.rl2_inputs`
    builds it.

    Args:
        observation_dim: Size of the flattened observation.
        num_actions: Number of discrete actions (categorical policy), or None.
        action_dim: Size of a continuous action (Gaussian policy), or None.
        units: GRU state size.
        hidden_units: Sizes of tanh Dense layers applied before the GRU.
        log_std_init: Initial log-std of a Gaussian policy.
        input_scale: None, or four factors `(observation, action, reward, done)` that
            multiply the four parts of `x_t` at the start of `step` (so sampling and the
            PPO unroll see the same inputs). Use them to bring the inputs to unit scale:
            with small actions and rewards (2D navigation: actions within ±0.1, reward
            changes of a few hundredths per step) the GRU barely sees the reward signal
            it must adapt from; `(2, 10, 10, 1)` there is what made RL² learn it.

    Raises:
        ValueError: Unless exactly one of `num_actions` and `action_dim` is given, or for
            an `input_scale` that is not four finite numbers.

    Example:

    >>> policy = RL2Policy(observation_dim=1, num_actions=2, units=8)
    >>> state = policy.get_initial_state(3)
    >>> x = tf.zeros([3, policy.input_dim])
    >>> dist, value, state = policy.step(x, state)
    >>> dist.shape, value.shape, state.shape
    (TensorShape([3, 2]), TensorShape([3]), TensorShape([3, 8]))
    """

    def __init__(self, observation_dim, num_actions=None, action_dim=None, units=64, hidden_units=(),
                 log_std_init=0.0, input_scale=None, **kwargs):
        super().__init__(**kwargs)
        if (num_actions is None) == (action_dim is None):
            raise ValueError(
                "Expected exactly one of `num_actions` (discrete) and `action_dim` (continuous). "
                f"Received: num_actions={num_actions!r}, action_dim={action_dim!r}")
        self.observation_dim = _positive_int(observation_dim, "observation_dim")
        self.discrete = num_actions is not None
        self.num_actions = None if num_actions is None else _positive_int(num_actions, "num_actions")
        self.action_dim = None if action_dim is None else _positive_int(action_dim, "action_dim")
        self.units = _positive_int(units, "units")
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.log_std_init = float(log_std_init)
        self.action_features = self.num_actions if self.discrete else self.action_dim
        self.input_dim = self.observation_dim + self.action_features + 2
        if input_scale is None:
            self.input_scale, self._input_factors = None, None
        else:
            factors = np.asarray(input_scale, np.float64).reshape(-1)
            if factors.shape != (4,) or not np.all(np.isfinite(factors)):
                raise ValueError("Expected `input_scale` to be None or four finite factors (observation, action, "
                                 f"reward, done). Received: input_scale={input_scale!r}")
            self.input_scale = tuple(float(f) for f in factors)
            self._input_factors = tf.constant(np.repeat(factors, [self.observation_dim, self.action_features, 1, 1]),
                                              tf.float32)
        self.encoder = [keras.layers.Dense(u, activation="tanh", name=f"encoder_{i}")
                        for i, u in enumerate(self.hidden_units)]
        self.build_core()
        self.policy_head = keras.layers.Dense(
            self.action_features, kernel_initializer=keras.initializers.Orthogonal(0.01), name="policy_head")
        self.value_head = keras.layers.Dense(1, name="value_head")
        if not self.discrete:
            self.log_std = self.add_weight(shape=(self.action_dim,), name="log_std",
                                           initializer=keras.initializers.Constant(self.log_std_init))
        self.step(tf.zeros([1, self.input_dim]), self.get_initial_state(1))
        # `step` made every weight; marked built, `.keras` saving knows the model is complete.
        self.built = True

    @classmethod
    def for_env(cls, env, units=64, hidden_units=(), log_std_init=0.0, input_scale=None):
        """A policy matching a gymnasium env's (or vector env's single) spaces.

        Args:
            env: A gymnasium env or vector env with a Box observation space and a
                Discrete or Box action space.
            units, hidden_units, log_std_init, input_scale: As in the constructor.

        Returns:
            An `RL2Policy`.

        Raises:
            TypeError: For other action spaces.
        """
        obs_space, act_space = RLLearner._spaces(env)
        obs_dim = int(np.prod(obs_space.shape))
        if isinstance(act_space, spaces.Discrete):
            return cls(obs_dim, num_actions=int(act_space.n), units=units, hidden_units=hidden_units,
                       input_scale=input_scale)
        if isinstance(act_space, spaces.Box):
            return cls(obs_dim, action_dim=int(np.prod(act_space.shape)), units=units,
                       hidden_units=hidden_units, log_std_init=log_std_init, input_scale=input_scale)
        raise TypeError("Expected a Discrete or Box action space. Received: action space of type "
                        f"{type(act_space).__name__}")

    def get_config(self):
        config = super().get_config()
        config.update(observation_dim=self.observation_dim, num_actions=self.num_actions,
                      action_dim=self.action_dim, units=self.units, hidden_units=list(self.hidden_units),
                      log_std_init=self.log_std_init,
                      input_scale=None if self.input_scale is None else list(self.input_scale))
        return config

    def build_core(self):
        """Makes the recurrent core that `core_step` runs (a GRU cell of `units`)."""
        self.cell = keras.layers.GRUCell(self.units, name="gru_cell")

    def core_step(self, z, state):
        """`(output, new_state)` of the core for encoded inputs `z` `[B, features]`."""
        return self.cell(z, state)

    def get_initial_state(self, batch_size):
        """Zero hidden state `[batch_size, units]` (the state at the start of every trial)."""
        return tf.zeros([batch_size, self.units])

    def call(self, inputs, training=False):
        x, state = inputs
        return self.step(x, state)

    def step(self, x, state):
        """One recurrent step.

        Args:
            x: Inputs `[B, input_dim]` (`keras_meta.rl.rl2_inputs.inputs`).
            state: Hidden state `[B, units]`.

        Returns:
            `(dist, value, new_state)`: distribution parameters `[B, P]` (logits, or
            `concat([mean, log_std])`), values `[B]` and the next state `[B, units]`.

        Raises:
            ValueError: For inputs or a state of another width (a `[B, 1]` input would
                otherwise be broadcast against `input_scale`).
        """
        state = tf.convert_to_tensor(state)
        z = self._encode(x)
        if state.shape[-1] != self.units:
            raise ValueError(f"Expected `state` to have {self.units} units in the last axis. "
                             f"Received: state.shape={tuple(state.shape)}")
        out, new_state = self.core_step(z, state)
        return (*self._heads(out), new_state)

    def _encode(self, x):
        """`x` `[..., input_dim]` scaled by `input_scale` and through the encoder (float32).

        Raises:
            ValueError: For inputs of another width (a `[B, 1]` input would otherwise be
                broadcast against `input_scale`).
        """
        z = tf.cast(x, tf.float32)
        if z.shape[-1] != self.input_dim:
            raise ValueError(f"Expected `x` to have {self.input_dim} features in the last axis (input_dim). "
                             f"Received: x.shape={tuple(z.shape)}")
        if self._input_factors is not None:
            z = z * self._input_factors
        for layer in self.encoder:
            z = layer(z)
        return z

    def _heads(self, out):
        """`(dist, value)` of the heads on core outputs `out` `[..., features]`."""
        head = self.policy_head(out)
        if not self.discrete:
            head = tf.concat([head, tf.zeros_like(head) + tf.cast(self.log_std, head.dtype)], axis=-1)
        return head, self.value_head(out)[..., 0]

    def unroll(self, inputs, resets, state=None):
        """Runs `step` over a sequence, resetting the state where `resets` is true.

        Args:
            inputs: `[B, T, input_dim]`.
            resets: Boolean `[B, T]`; where true, the state is set to the initial state
                before step `t` (trial boundaries).
            state: Initial state `[B, units]` (default: zeros).

        Returns:
            `(dist [B, T, P], values [B, T], states [B, T, units])`, `states[:, t]` being
            the state after step `t`.
        """
        inputs = tf.convert_to_tensor(inputs, tf.float32)
        resets = tf.convert_to_tensor(resets, tf.bool)
        if state is None:
            state = self.get_initial_state(tf.shape(inputs)[0])
        p = self.action_features * (1 if self.discrete else 2)
        dummy = (tf.zeros([tf.shape(inputs)[0], p]), tf.zeros([tf.shape(inputs)[0]]), state)

        def body(carry, xs):
            x, reset = xs
            h = tf.where(reset[:, None], tf.zeros_like(carry[2]), carry[2])
            return self.step(x, h)

        dist, values, states = tf.scan(
            body, (tf.transpose(inputs, [1, 0, 2]), tf.transpose(resets, [1, 0])), initializer=dummy)
        return (tf.transpose(dist, [1, 0, 2]), tf.transpose(values, [1, 0]), tf.transpose(states, [1, 0, 2]))

    def log_prob(self, dist, actions):
        if self.discrete:
            log_p = tf.nn.log_softmax(dist)
            return tf.gather(log_p, tf.cast(actions, tf.int32), axis=-1, batch_dims=len(log_p.shape) - 1)
        mean, log_std = dist[..., :self.action_dim], dist[..., self.action_dim:]
        return gaussian_log_prob(mean, log_std, tf.cast(actions, mean.dtype))

    def entropy(self, dist):
        if self.discrete:
            log_p = tf.nn.log_softmax(dist)
            return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)
        return gaussian_entropy(dist[..., self.action_dim:])

    def sample(self, dist, seed):
        """Stateless sample: Gumbel-max (discrete) or `mean + std * eps` (continuous)."""
        if self.discrete:
            u = tf.random.stateless_uniform(tf.shape(dist), seed=seed, minval=1e-9, maxval=1.0)
            return tf.argmax(dist - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int64)
        mean, log_std = dist[..., :self.action_dim], dist[..., self.action_dim:]
        return mean + tf.exp(log_std) * tf.random.stateless_normal(tf.shape(mean), seed=seed)

    def mode(self, dist):
        """The greedy (discrete) or mean (continuous) action."""
        if self.discrete:
            return tf.argmax(dist, axis=-1, output_type=tf.int64)
        return dist[..., :self.action_dim]
