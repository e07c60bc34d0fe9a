"""Inner-loop update rules (optax-shaped `init`/`update`) and the one inner loop."""

from keras_meta.inner.learned import LearnedRule, meta_lstm, preprocess
from keras_meta.inner.loop import Adapted, adapt, gradients
from keras_meta.inner.rules import (
    UpdateRule,
    adam,
    cast_scalar,
    momentum,
    per_layer_per_step_sgd,
    per_parameter_sgd,
    per_step_sgd,
    sgd,
)

__all__ = [
    "Adapted",
    "LearnedRule",
    "UpdateRule",
    "adam",
    "adapt",
    "cast_scalar",
    "gradients",
    "meta_lstm",
    "momentum",
    "per_layer_per_step_sgd",
    "per_parameter_sgd",
    "per_step_sgd",
    "preprocess",
    "sgd",
]
