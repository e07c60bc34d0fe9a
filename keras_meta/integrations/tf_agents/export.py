"""Export of (adapted) policies as SavedModels served by plain TensorFlow."""

from tf_agents.policies import policy_saver, tf_policy

from keras_meta.integrations.tf_agents.policies import KerasPolicy, RL2KerasPolicy, keras_policy_of
from keras_meta.rl.policies import RL2Policy


def export_policy(policy, path, time_step_spec=None, action_spec=None, deterministic=True, seed=0):
    """Saves a (typically adapted) policy with TF-Agents' `PolicySaver`.

    The SavedModel loads with plain `tf.saved_model.load(path)` (no keras_meta needed);
    its `action` signature maps a time step to actions. An RL² policy (`RL2Policy`, an
    `RL2` learner or an `RL2KerasPolicy`) is exported as a stateful policy: `action`
    also takes and returns the policy state (inputs `1/hidden`, `1/prev_action`,
    `1/prev_reward`, `1/prev_done`; outputs `state/...`), and `get_initial_state`
    (input `batch_size`) returns the zero state a trial starts from. The caller carries
    the state across episode ends and resets it between trials, like `TrialDriver`.

    Args:
        policy: A keras_meta policy (Keras model), an RL learner (`RL2`, `MAMLRL`: its policy), a `KerasPolicy` or
            an `RL2KerasPolicy`.
        path: Output directory.
        time_step_spec, action_spec: Specs (required unless `policy` is a `KerasPolicy`).
        deterministic: Export the mean/greedy policy.
        seed: Seed of a stochastic export.

    Returns:
        `path`.
    """
    policy = keras_policy_of(policy)
    if not isinstance(policy, tf_policy.TFPolicy):
        if time_step_spec is None or action_spec is None:
            raise ValueError("Expected `time_step_spec` and `action_spec` with a Keras policy. Received: None")
        wrapper = RL2KerasPolicy if isinstance(policy, RL2Policy) else KerasPolicy
        policy = wrapper(policy, time_step_spec, action_spec, deterministic=deterministic, seed=seed)
    policy_saver.PolicySaver(policy, batch_size=None).save(path)
    return path
