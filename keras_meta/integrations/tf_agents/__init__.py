"""TF-Agents bridge: environments, TFPolicies over Keras 3 policies, drivers, agents, export.

One module per role: `env` (gymnasium task envs as TF-Agents environments, task-batched
ones), `graph_env` (in-graph task envs), `policies` (TFPolicies over keras_meta's Keras 3
policies, MAML-RL's task-batched collect policy), `drivers` (collection, RL² trials,
`Trajectory` batches as rollout buffers, MAML-RL adaptation on driver data), `agents`
(`MAMLAgent`, `RL2Agent`) and `export` (PolicySaver).

Import this module explicitly (`from keras_meta.integrations import tf_agents as kmtfa`);
`import keras_meta` never imports tf_agents, tensorflow_probability or tf_keras.

TF-Agents 0.19 imports TensorFlow Probability 0.23, which only imports under
`TF_USE_LEGACY_KERAS=1` next to Keras 3. That variable only redirects `tf.keras` (to
tf_keras); `import keras` stays Keras 3 and keras_meta's models stay Keras 3. This module
sets it when it is unset, before TF-Agents is first imported, and refuses an explicit
`TF_USE_LEGACY_KERAS=0`.
"""

import os


def _require_legacy_keras_flag():
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value is None:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        return
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        raise RuntimeError(
            "Expected TF_USE_LEGACY_KERAS to be unset or '1' for the TF-Agents bridge. Received: "
            f"TF_USE_LEGACY_KERAS={value!r}. tf-agents 0.19 imports tensorflow-probability 0.23, which "
            "fails under Keras 3 unless TF_USE_LEGACY_KERAS=1 is set before tf_agents is first imported. "
            "Unset the variable (keras_meta then sets it) or export TF_USE_LEGACY_KERAS=1; it only "
            "redirects tf.keras to tf_keras, `import keras` and keras_meta models stay Keras 3."
        )


_require_legacy_keras_flag()

# The submodules import tf_agents, so they come after the flag is settled.
from keras_meta.integrations.tf_agents.agents import MAMLAgent, RL2Agent  # noqa: E402
from keras_meta.integrations.tf_agents.drivers import (  # noqa: E402
    TrialDriver, collect_episodes, collect_steps, driver_adapt, trajectories_to_rollouts)
from keras_meta.integrations.tf_agents.env import (  # noqa: E402
    GymnasiumPyEnvironment, set_tasks, specs_for, task_batched_env, tf_env)
from keras_meta.integrations.tf_agents.export import export_policy  # noqa: E402
from keras_meta.integrations.tf_agents.graph_env import GraphTFEnvironment  # noqa: E402
from keras_meta.integrations.tf_agents.policies import KerasPolicy, RL2KerasPolicy, TaskBatchedPolicy  # noqa: E402

__all__ = ["GraphTFEnvironment", "GymnasiumPyEnvironment", "KerasPolicy", "MAMLAgent", "RL2Agent", "RL2KerasPolicy",
           "TaskBatchedPolicy", "TrialDriver", "collect_episodes", "collect_steps", "driver_adapt", "export_policy",
           "set_tasks", "specs_for", "task_batched_env", "tf_env", "trajectories_to_rollouts"]
