"""Meta-reinforcement learning: task environments, rollout buffer, policies, MAML-RL, RL².

The TF-Agents bridge lives in `keras_meta.integrations.tf_agents` and is never imported
from here, so `import keras_meta.rl` needs neither tf_agents nor tensorflow_probability.
Each name below is imported from its module on first use, so `import keras_meta.rl`
imports neither gymnasium nor TensorFlow, and MuJoCo/Meta-World only load when an
environment needs them.
"""

from keras_meta import _lazy

# Public name -> the module of this package that defines it.
_NAMES = {
    "AdaptationSession": "adaptation",
    "AntDir": "envs",
    "BatchedNavigation2D": "envs",
    "BernoulliBandit": "envs",
    "CategoricalPolicy": "policies",
    "GaussianPolicy": "policies",
    "GraphBernoulliBandit": "graph_envs",
    "GraphMetaIteration": "graph_iteration",
    "GraphNavigation2D": "graph_envs",
    "GraphPointMass2D": "graph_envs",
    "GraphTaskEnv": "graph_envs",
    "HalfCheetahDir": "envs",
    "HalfCheetahVel": "envs",
    "LinearFeatureBaseline": "maml_rl",
    "MAMLRL": "maml_rl",
    "MetaGradientPG": "meta_gradient",
    "MetaWorldAgent": "metaworld",
    "MetaWorldML1": "metaworld",
    "MetaWorldML10": "metaworld",
    "Navigation2D": "envs",
    "PointMass2D": "envs",
    "RL2": "rl2",
    "RL2Policy": "policies",
    "RolloutBuffer": "buffer",
    "SNAILPolicy": "snail_policy",
    "TaskEnv": "envs",
    "TrainingState": "_loop",
    "check_task_env": "envs",
    "conjugate_gradient": "objectives.trpo",
    "generalized_advantages": "meta_gradient",
    "meta_evaluate_episodes": "metaworld",
    "metaworld_available": "metaworld",
    "metaworld_eval_envs": "metaworld",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = _lazy.attach(__name__, _NAMES)
