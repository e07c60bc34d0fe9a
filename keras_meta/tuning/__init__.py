"""Hyperparameter and architecture search around meta-learners, on KerasTuner.

`MetaHyperModel` is a `keras_tuner.HyperModel` that builds a meta-learner (supervised or
RL) from a function of the hyperparameters and scores it by its post-adaptation
validation performance, so any KerasTuner tuner (`RandomSearch`, `BayesianOptimization`,
`Hyperband`), including its distributed chief/worker mode, searches over layers, units,
inner/outer learning rates, inner steps or RL discounts. KerasTuner (`pip install
keras-meta[tuning]`) is imported on first use of a name below.
"""

from keras_meta import _lazy

# Public name -> the module of this package that defines it.
_NAMES = {
    "AdaptedValidation": "hypermodel",
    "MetaHyperModel": "hypermodel",
    "learner_of": "hypermodel",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = _lazy.attach(__name__, _NAMES)
