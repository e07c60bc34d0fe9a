"""Meta-reinforcement learning: task environments, rollout buffer, policies, MAML-RL.

The TF-Agents bridge lives in `keras_meta.integrations.tf_agents` and is never imported
from here, so `import keras_meta.rl` needs neither tf_agents nor tensorflow_probability.
"""

from keras_meta.rl.buffer import RolloutBuffer
from keras_meta.rl.envs import (
    AntDir,
    BatchedNavigation2D,
    HalfCheetahDir,
    HalfCheetahVel,
    Navigation2D,
    TaskEnv,
    check_task_env,
)
from keras_meta.rl.maml_rl import MAMLRL, LinearFeatureBaseline, conjugate_gradient
from keras_meta.rl.policies import CategoricalPolicy, GaussianPolicy

__all__ = [
    "AntDir",
    "BatchedNavigation2D",
    "CategoricalPolicy",
    "GaussianPolicy",
    "HalfCheetahDir",
    "HalfCheetahVel",
    "LinearFeatureBaseline",
    "MAMLRL",
    "Navigation2D",
    "RolloutBuffer",
    "TaskEnv",
    "check_task_env",
    "conjugate_gradient",
]
