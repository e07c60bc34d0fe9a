"""Inner-loop update rules (optax-shaped `init`/`update`) and the one inner loop."""

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
    "UpdateRule",
    "adam",
    "adapt",
    "cast_scalar",
    "gradients",
    "momentum",
    "per_layer_per_step_sgd",
    "per_parameter_sgd",
    "per_step_sgd",
    "sgd",
]
