"""Meta-reinforcement learning: task environments, rollout buffer, policies, MAML-RL, RL².

The TF-Agents bridge lives in `keras_meta.integrations.tf_agents` and is never imported
from here, so `import keras_meta.rl` needs neither tf_agents nor tensorflow_probability.
"""

from keras_meta.rl._loop import TrainingState
from keras_meta.rl.buffer import RolloutBuffer
from keras_meta.rl.envs import (
    AntDir,
    BatchedNavigation2D,
    BernoulliBandit,
    HalfCheetahDir,
    HalfCheetahVel,
    Navigation2D,
    TaskEnv,
    check_task_env,
)
from keras_meta.rl.maml_rl import MAMLRL, LinearFeatureBaseline, conjugate_gradient
from keras_meta.rl.metaworld import MetaWorldML1, meta_evaluate_episodes, metaworld_available
from keras_meta.rl.policies import CategoricalPolicy, GaussianPolicy
from keras_meta.rl.rl2 import RL2, RL2Policy

__all__ = [
    "AntDir",
    "BatchedNavigation2D",
    "BernoulliBandit",
    "CategoricalPolicy",
    "GaussianPolicy",
    "HalfCheetahDir",
    "HalfCheetahVel",
    "LinearFeatureBaseline",
    "MAMLRL",
    "MetaWorldML1",
    "Navigation2D",
    "RL2",
    "RL2Policy",
    "RolloutBuffer",
    "TaskEnv",
    "TrainingState",
    "check_task_env",
    "conjugate_gradient",
    "meta_evaluate_episodes",
    "metaworld_available",
]
