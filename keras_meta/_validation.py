"""The argument checks shared by the public entry points.

Each raises a `TypeError` or `ValueError` worded "Expected ... Received: name=value" and
returns the value in its canonical Python type.
"""

import keras
import numpy as np

_MAX_SEED = 2**64


def _is_int(value):
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def check_positive_int(value, name):
    if not _is_int(value):
        raise TypeError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    if value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_steps(value, name="inner_steps", allow_zero=False):
    if not _is_int(value):
        raise TypeError(f"Expected `{name}` to be an integer. Received: {name}={value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"Expected `{name}` to be {kind} integer. Received: {name}={value!r}")
    return int(value)


def check_seed(seed, name="seed"):
    """Returns `seed` as a Python int in [0, 2**64) or raises a clear error."""
    if not _is_int(seed):
        raise TypeError(f"Expected `{name}` to be an integer. Received: {name}={seed!r}")
    if not 0 <= int(seed) < _MAX_SEED:
        raise ValueError(f"Expected `{name}` to be in [0, 2**64). Received: {name}={seed!r}")
    return int(seed)


def check_learning_rate(value, name="inner_lr"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"Expected `{name}` to be a positive number. Received: {name}={value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive number. Received: {name}={value!r}")
    return float(value)


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Expected `{name}` to be a bool. Received: {name}={value!r}")
    return bool(value)


def check_choice(value, name, choices=(True, False, "auto")):
    if value not in choices:
        wanted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Expected `{name}` to be one of {wanted}. Received: {name}={value!r}")
    return value


def check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected `model` to be a Keras 3 `keras.Model`. Received: model of type "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    if not model.built or not model.trainable_variables:
        raise ValueError(
            "Expected `model` to be built, with trainable weights (give it a "
            "`keras.Input` or call `model.build(input_shape)` first). Received: "
            f"model={model.name!r} with built={model.built} and "
            f"{len(model.trainable_variables)} trainable weights"
        )
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if (inputs and len(inputs) > 1) or (outputs and len(outputs) > 1):
        raise ValueError(
            "Expected a model with one input and one output (a task's examples and targets "
            "are single arrays). Received: model="
            f"{model.name!r} with {len(inputs or [])} inputs and {len(outputs or [])} outputs"
        )
    return model
