"""A MAML-RL policy's adaptation as one SavedModel that plain TensorFlow (and TF-Agents) runs."""

import collections
import os

import tensorflow as tf
from google.protobuf import text_format

from keras_meta import _compat, inner
from keras_meta.ops.vectorize import stack_copies

__all__ = ["export_adaptive_policy"]


# The namedtuples of TF-Agents' `TimeStep` and `PolicyStep`, by name and fields: a
# SavedModel records a namedtuple as such, so a loaded `action` takes TF-Agents' own
# `TimeStep` and returns a `PolicyStep`-shaped tuple, with no TF-Agents import here.
_TimeStep = collections.namedtuple("TimeStep", ("step_type", "reward", "discount", "observation"))
_PolicyStep = collections.namedtuple("PolicyStep", ("action", "state", "info"))
_Trajectory = collections.namedtuple("Trajectory", (
    "step_type", "observation", "action", "policy_info", "next_step_type", "reward",
    "discount"))


def export_adaptive_policy(learner, path):
    """Writes a MAML-RL policy's adaptation as one SavedModel that plain TensorFlow runs.

    Prefer `MAMLRL.export_adaptive(path)`. Signatures (also the loaded object's methods):

    - `adapt(observations, actions, advantages) -> {"weights_0": ..., ...}`: one inner
      policy-gradient step from the meta-weights, `phi = theta - inner_lr * grad_theta
      mean(-log pi_theta(a | o) * A)`, on a batch of transitions `[N, ...]` of one task:
      MAML-RL's inner step (`MAMLRL.adapt_step`) with every row valid. `advantages` are
      the caller's (e.g. the `MAMLRL.process` ones: baseline, GAE, normalisation).
    - `action(observation, weights_0, ...) -> {"action": ...}`: the policy's deterministic
      action (Gaussian mean, greedy category) at the adapted weights, `observation`
      `[batch, observation_dim]`.
    - `action_meta(observation) -> {"action": ...}`: the same at the meta-weights.

    It is also a TF-Agents policy as `tf_agents.policies.PolicySaver` writes one, whose
    policy state is the weights, one set per batch row (each row of a batched
    environment may act for its own task):

    - `get_initial_state(batch_size) -> {"weights_0": [batch_size, ...], ...}`: the
      meta-weights on every row.
    - `adapt_state(observations, actions, advantages, batch_size)`: `adapt`'s weights on
      `batch_size` rows, the policy state of rows acting for that task (concatenate the
      states of several tasks along the first axis for rows of different tasks).
    - The loaded object's `action(time_step, policy_state)` method (TF-Agents' `TimeStep`
      of `[batch, ...]` tensors; the method also takes `action`'s `(observation,
      weights_0, ...)`) returns a `PolicyStep` `(action, state, info=())`: each
      row's deterministic action at its own weights, as `action` gives it, in the
      policy's units (like `integrations.tf_agents.KerasPolicy`; not mapped by
      `learner.env_actions`), and the state unchanged.
    - `get_train_step() -> int64`: the learner's meta-iteration at export;
      `get_metadata() -> {}`; the `model_variables` attribute.
    - `policy_specs.pbtxt` beside it, so TF-Agents'
      `SavedModelPyTFEagerPolicy(path, load_specs_from_pbtxt=True)` loads it with no
      specs given and drives an environment after `adapt_state`.

    Args:
        learner: A `keras_meta.rl.MAMLRL`.
        path: Directory to write the SavedModel to.

    Returns:
        The `tf.Module` that was saved.
    """
    policy = learner.policy
    dtype = tf.as_dtype(policy.trainable_variables[0].dtype)
    observations = tf.TensorSpec([None, policy.observation_dim], dtype, name="observations")
    observation = tf.TensorSpec([None, policy.observation_dim], dtype, name="observation")
    # The action's dtype and width as the policy produces them (float means, int64 ids).
    sample = tf.function(lambda o: policy.mode(None, o)).get_concrete_function(
        observations).structured_outputs
    actions = tf.TensorSpec(sample.shape, sample.dtype, name="actions")
    advantages = tf.TensorSpec([None], dtype, name="advantages")
    batch_size = tf.TensorSpec([], tf.int32, name="batch_size")
    weight_specs = [tf.TensorSpec(v.shape, v.dtype, name=f"weights_{i}")
                    for i, v in enumerate(policy.trainable_variables)]
    state_spec = {s.name: tf.TensorSpec([None, *s.shape], s.dtype, name=s.name)
                  for s in weight_specs}
    time_step = _TimeStep(tf.TensorSpec([None], tf.int32, name="step_type"),
                          tf.TensorSpec([None], tf.float32, name="reward"),
                          tf.TensorSpec([None], tf.float32, name="discount"), observation)

    module = tf.Module(name=f"{policy.name}_adaptive")
    module.policy_variables = [v.value for v in policy.variables]
    module.model_variables = module.policy_variables

    def adapt(observations, actions, advantages):
        def loss(params, step):
            del step
            log_p = policy.log_prob(params, observations, actions)
            return tf.reduce_mean(-log_p * advantages)

        fast = inner.adapt(loss, policy.weights_list(), inner.sgd(learner.inner_lr), 1,
                           first_order=True).params
        return {f"weights_{i}": w for i, w in enumerate(fast)}

    def adapt_state(observations, actions, advantages, batch_size):
        return stack_copies(module.adapt(observations, actions, advantages), batch_size)

    def get_initial_state(batch_size):
        return stack_copies({f"weights_{i}": w for i, w in enumerate(policy.weights_list())},
                            batch_size)

    def action(observation, *weights):
        if isinstance(observation, _TimeStep):
            return policy_action(observation, *weights)
        return {"action": policy.mode(list(weights), observation)}

    def policy_action(time_step, policy_state):
        # Each row at its own weights: the one-row forward pass mapped over the rows.
        rows = [tf.cast(time_step.observation, dtype),
                *(policy_state[s.name] for s in weight_specs)]
        chosen = tf.map_fn(lambda row: policy.mode(list(row[1:]), row[0][None])[0], rows,
                           fn_output_signature=tf.TensorSpec(actions.shape[1:], actions.dtype))
        return _PolicyStep(chosen, policy_state, ())

    def action_meta(observation):
        return {"action": policy.mode(None, observation)}

    module.adapt = tf.function(adapt, input_signature=[observations, actions, advantages])
    module.adapt_state = tf.function(
        adapt_state, input_signature=[observations, actions, advantages, batch_size])
    module.get_initial_state = tf.function(get_initial_state, input_signature=[batch_size])
    module.action = tf.function(action)
    module.action_meta = tf.function(action_meta, input_signature=[observation])
    train_step = tf.constant(learner.iteration, tf.int64)
    module.get_train_step = tf.function(lambda: train_step, input_signature=[])
    module.get_metadata = tf.function(lambda: {}, input_signature=[])
    signatures = {name: getattr(module, name).get_concrete_function()
                  for name in ("adapt", "adapt_state", "get_initial_state", "action_meta",
                               "get_train_step", "get_metadata")}
    signatures["action"] = module.action.get_concrete_function(observation, *weight_specs)
    # The TF-Agents method: `action(time_step, policy_state)`.
    module.action.get_concrete_function(time_step, state_spec)
    tf.saved_model.save(module, str(path), signatures=signatures)
    _write_policy_specs(path, time_step, actions, state_spec)
    return module


def _write_policy_specs(path, time_step, action, state_spec):
    """Writes `policy_specs.pbtxt` as `PolicySaver` does: the unbatched collect data spec
    (a `Trajectory`) and policy state spec, for `SavedModelPyTFEagerPolicy(...,
    load_specs_from_pbtxt=True)`."""
    def unbatched(spec):
        return tf.TensorSpec(spec.shape[1:], spec.dtype, name=spec.name)

    trajectory = _Trajectory(
        step_type=unbatched(time_step.step_type), observation=unbatched(time_step.observation),
        action=unbatched(action), policy_info=(), next_step_type=unbatched(time_step.step_type),
        reward=unbatched(time_step.reward), discount=unbatched(time_step.discount))
    specs = {"collect_data_spec": trajectory,
             "policy_state_spec": {k: unbatched(s) for k, s in state_spec.items()}}
    with open(os.path.join(str(path), "policy_specs.pbtxt"), "w") as f:
        f.write(text_format.MessageToString(_compat.encode_structure(specs)))
