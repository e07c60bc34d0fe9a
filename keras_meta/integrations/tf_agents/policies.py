"""TF-Agents `TFPolicy`s over keras_meta's Keras 3 policies (MAML-RL's and RL²'s)."""

import tensorflow as tf
from tf_agents.policies import tf_policy
from tf_agents.trajectories import policy_step

from keras_meta.rl import rl2_inputs
from keras_meta.rl._loop import RLLearner
from keras_meta.rl.policies import RL2Policy


def keras_policy_of(policy):
    """The Keras policy of an RL learner (its `policy`), or `policy` itself."""
    return policy.policy if isinstance(policy, RLLearner) else policy


class _KerasBackedPolicy(tf_policy.TFPolicy):
    """What both policies share: the Keras policy, its variables and the sampling stream.

    Sampled actions use a stateless seed `(seed, counter)` whose counter advances on every
    call, so runs are reproducible whatever TF-Agents passes as `seed`.
    """

    def __init__(self, policy, time_step_spec, action_spec, deterministic, seed, **kwargs):
        super().__init__(time_step_spec, action_spec, clip=False, **kwargs)
        self._keras_policy = policy
        self._deterministic = bool(deterministic)
        self._counter = tf.Variable([int(seed), 0], dtype=tf.int64, trainable=False, name="seed_counter")

    @property
    def keras_policy(self):
        return self._keras_policy

    def _variables(self):
        return list(self._keras_policy.variables) + [self._counter]

    def _choose(self, dist, sample, mode):
        """`mode(dist)` when deterministic, else `sample(dist, seed)` on the next seed."""
        if self._deterministic:
            return mode(dist)
        action = sample(dist, tf.identity(self._counter))
        self._counter.assign_add([0, 1])
        return action

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError(f"{type(self).__name__} samples directly; use action().")


class KerasPolicy(_KerasBackedPolicy):
    """A TF-Agents `TFPolicy` over a keras_meta policy (a Keras 3 model).

    Actions are `policy.sample(weights, obs, seed)` with a stateless seed `(seed, counter)`
    whose counter advances on every call, or `policy.mode(weights, obs)` when
    `deterministic`. The weights are the model's own variables: pass an adapted policy
    (`learner.adapt(...)` or `policy.adapted(fast_weights)`) to act at adapted weights.

    Args:
        policy: A `keras_meta.rl.GaussianPolicy` or `CategoricalPolicy`.
        time_step_spec: The TF environment's time step spec.
        action_spec: The TF environment's action spec.
        deterministic: Take the mean / greedy action.
        seed: Seed of the sampling stream.
    """

    def __init__(self, policy, time_step_spec, action_spec, deterministic=False, seed=0):
        super().__init__(policy, time_step_spec, action_spec, deterministic, seed)

    def _action(self, time_step, policy_state, seed):
        del seed  # see _KerasBackedPolicy
        net = self._keras_policy
        dist = net.dist_params(None, tf.cast(time_step.observation, tf.float32))
        action = self._choose(dist, net.sample_from_dist, net.mode_from_dist)
        action = tf.cast(action, self.action_spec.dtype)
        return policy_step.PolicyStep(action, policy_state, ())


class RL2KerasPolicy(_KerasBackedPolicy):
    """A stateful TF-Agents `TFPolicy` over an `RL2Policy` (recurrent, RL²).

    The policy state is a dict `{"hidden": [units], "prev_action": [action_features],
    "prev_reward": [], "prev_done": []}`. `automatic_state_reset` is off: TF-Agents would
    otherwise zero the state at every `FIRST` time step, i.e. at every episode start,
    while RL² keeps it across the episodes of a trial. Reset it between trials with
    `get_initial_state` (as `TrialDriver` does).

    Per time step (TF-Agents carries the reward of the previous transition in the
    current time step), the network input is `x = [obs, prev_action, r, d]` with

    - `MID`: `r = time_step.reward`, `d = 0`;
    - `FIRST`: `r, d` = the stored reward and done flag of the previous episode's end
      (zeros at the start of a trial);
    - `LAST`: the env ignores the action (auto-reset), so the hidden state and previous
      action stay unchanged and only `r = time_step.reward`, `d = 1` are stored.

    This reproduces exactly the inputs `keras_meta.rl.RL2.collect` feeds during training.

    Args:
        policy: An `RL2Policy`.
        time_step_spec, action_spec: The TF environment's specs.
        deterministic: Take the greedy / mean action.
        seed: Seed of the stateless sampling stream.

    Raises:
        TypeError: If `policy` is not an `RL2Policy`.
    """

    def __init__(self, policy, time_step_spec, action_spec, deterministic=False, seed=0):
        policy = keras_policy_of(policy)
        if not isinstance(policy, RL2Policy):
            raise TypeError("Expected `policy` to be a keras_meta.rl.RL2Policy. Received: policy of type "
                            f"{type(policy).__name__}")
        state_spec = {
            "hidden": tf.TensorSpec([policy.units], tf.float32, name="hidden"),
            "prev_action": tf.TensorSpec([policy.action_features], tf.float32, name="prev_action"),
            "prev_reward": tf.TensorSpec([], tf.float32, name="prev_reward"),
            "prev_done": tf.TensorSpec([], tf.float32, name="prev_done"),
        }
        super().__init__(policy, time_step_spec, action_spec, deterministic, seed,
                         policy_state_spec=state_spec, automatic_state_reset=False)

    def _action(self, time_step, policy_state, seed):
        del seed  # see _KerasBackedPolicy
        net = self._keras_policy
        first, last = time_step.is_first(), time_step.is_last()
        reward = tf.reshape(tf.cast(time_step.reward, tf.float32), [-1])
        prev_reward = tf.where(first, policy_state["prev_reward"], reward)
        prev_done = tf.where(first, policy_state["prev_done"], tf.zeros_like(reward))
        x = rl2_inputs.inputs(net, time_step.observation, policy_state["prev_action"], prev_reward, prev_done)
        dist, _, hidden = net.step(x, policy_state["hidden"])
        action = self._choose(dist, net.sample, net.mode)
        keep = last[:, None]
        state = {
            "hidden": tf.where(keep, policy_state["hidden"], hidden),
            "prev_action": tf.where(keep, policy_state["prev_action"], rl2_inputs.encode_actions(net, action)),
            "prev_reward": tf.where(last, reward, tf.zeros_like(reward)),
            "prev_done": tf.cast(last, tf.float32),
        }
        action = tf.reshape(tf.cast(action, self.action_spec.dtype),
                            tf.concat([tf.shape(reward), self.action_spec.shape], 0))
        return policy_step.PolicyStep(action, state, ())
