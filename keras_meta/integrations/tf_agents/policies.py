"""TF-Agents `TFPolicy`s over keras_meta's Keras 3 policies (MAML-RL's and RL²'s), and MAML-RL's
task-batched collect policy."""

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


class TaskBatchedPolicy(tf_policy.TFPolicy):
    """MAML-RL's collect policy: row `b` acts with the fast weights of task `b // rows_per_task`.

    The per-task weights are variables `[num_tasks, ...]` (one per policy weight), which
    `MAMLAgent.train` and `MAMLAgent.adapt` set. Actions come from the learner's own
    sampler (`MAMLRL.act`, which `MAMLRL.collect` samples with), with the stateless seed
    `(seed, counter)`, the counter advancing at every call (boundary steps included), as
    `MAMLRL.collect` numbers its vector steps: from the same weights, tasks and seed, both
    sample the same actions.

    Args:
        learner: The `MAMLRL` learner.
        time_step_spec, action_spec: The environment's specs.
        num_tasks: Tasks per batch.
        rows_per_task: Rows per task; the batch size is `num_tasks * rows_per_task`.
        deterministic: Take the mean / greedy action.
        seed: Start of the sampling stream.
    """

    def __init__(self, learner, time_step_spec, action_spec, num_tasks, rows_per_task, deterministic=False,
                 seed=0):
        super().__init__(time_step_spec, action_spec, clip=False)
        self._learner = learner
        self._num_tasks, self._rows = int(num_tasks), int(rows_per_task)
        self._deterministic = bool(deterministic)
        self._fast = [tf.Variable(w, trainable=False, name=f"fast_weights_{i}")
                      for i, w in enumerate(learner.stack_weights(learner.policy.weights_list(), self._num_tasks))]
        self._counter = tf.Variable([int(seed), 0], dtype=tf.int64, trainable=False, name="seed_counter")

    @property
    def num_tasks(self):
        return self._num_tasks

    @property
    def rows_per_task(self):
        return self._rows

    def fast_weights(self):
        """The per-task weights, tensors `[num_tasks, ...]`."""
        return [tf.identity(v) for v in self._fast]

    def set_fast_weights(self, stacked):
        """Sets the per-task weights (tensors `[num_tasks, ...]`)."""
        for variable, value in zip(self._fast, stacked):
            variable.assign(value)

    def reset(self, seed):
        """Back to the meta-weights for every task, sampling stream restarted at `(seed, 0)`."""
        self.set_fast_weights(self._learner.stack_weights(self._learner.policy.weights_list(), self._num_tasks))
        self.restart_stream(seed)

    def restart_stream(self, seed):
        self._counter.assign([int(seed) % (2**31 - 1), 0])

    def _variables(self):
        return self._fast + [self._counter]

    def _action(self, time_step, policy_state, seed):
        del seed  # the stream is the counter's (see the class docstring)
        obs = tf.reshape(tf.cast(time_step.observation, tf.float32), [self._num_tasks, self._rows, -1])
        actions = self._learner.act(self.fast_weights(), obs, tf.identity(self._counter), self._deterministic)
        if not self._deterministic:
            self._counter.assign_add([0, 1])
        shape = tf.concat([[self._num_tasks * self._rows], self.action_spec.shape], 0)
        return policy_step.PolicyStep(tf.cast(tf.reshape(actions, shape), self.action_spec.dtype), policy_state, ())

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError("TaskBatchedPolicy samples directly; use action().")
