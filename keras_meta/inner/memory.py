"""Second order within a memory budget: how the inner loop keeps what the outer gradient needs.

Back-propagating through `K` inner steps keeps every step's activations (and those of its
inner backward pass) until the outer gradient is taken, so memory grows with `K`. Three
modes trade memory for time or exactness:

- `"plain"`: keep everything (exact; fastest).
- `"recompute"`: keep only each step's inputs (fast weights, rule state) and recompute the
  step's forward and inner backward pass when the outer gradient reaches it
  (`keras_meta.inner.adapt(recompute=True)`; exact; one more inner step of compute per
  step).
- `"truncated:k"`: back-propagate to second order through the last `k` steps only; the
  earlier steps are first order (their Jacobian taken as the identity, as FOMAML does for
  all of them: Shaban et al., 2019, truncated back-propagation for bilevel optimization).
  An approximation: `k = K` is plain second order, `k = 0` would be first order.

`plan` chooses one from a byte budget and `estimate`, a model of the bytes one task keeps
for its outer gradient.
"""

import logging
import os
import re
from typing import NamedTuple

import numpy as np
import tensorflow as tf

_LOG = logging.getLogger("keras_meta")

MODES = ("plain", "recompute", "truncated:k")

# Bytes per activation element of one second-order inner step: the forward pass, its
# inner backward pass and the values the outer (double) backward pass reads from both.
_ACTIVATION_COPIES = 3
# Per-step copies of the adapted weights: the weights, their inner gradient, the update.
_WEIGHT_COPIES = 3


class MemoryPlan(NamedTuple):
    """What `plan` chose: `mode` (`"plain"`, `"recompute"` or `"truncated:k"`),
    `recompute`, `exact_steps` (None: all steps second order), the estimated peak bytes
    of the inner loops in flight (`estimate`) and the `budget` (None when the mode was
    given explicitly)."""

    mode: str
    recompute: bool
    exact_steps: object
    estimate: int
    budget: object


def parse_mode(mode, name="second_order_mode"):
    """`(recompute, exact_steps)` of `"plain"`, `"recompute"` or `"truncated:k"` (k >= 1).

    Raises:
        TypeError, ValueError: Naming `name`, for anything else.
    """
    if not isinstance(mode, str):
        raise TypeError(f"Expected `{name}` to be one of 'plain', 'recompute' or "
                        f"'truncated:k' (k >= 1). Received: {name}={mode!r}")
    if mode in ("plain", "recompute"):
        return mode == "recompute", None
    match = re.fullmatch(r"truncated:([0-9]+)", mode)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"Expected `{name}` to be one of 'plain', 'recompute' or "
                         f"'truncated:k' (k >= 1). Received: {name}={mode!r}")
    return False, int(match.group(1))


def check_budget(budget):
    """`budget` as given: a positive number of bytes, `"auto"` or None.

    Raises:
        TypeError, ValueError: Naming `memory_budget`.
    """
    if budget is None or budget == "auto":
        return budget
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError("Expected `memory_budget` to be a positive number of bytes or 'auto'. "
                        f"Received: memory_budget={budget!r}")
    if budget <= 0:
        raise ValueError("Expected `memory_budget` to be a positive number of bytes or 'auto'. "
                         f"Received: memory_budget={budget!r}")
    return int(budget)


def available_bytes():
    """Half the host's available physical memory: `memory_budget="auto"`."""
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def activation_elements(model):
    """Float elements of every intermediate value of one forward pass, per example.

    Counted on the traced graph of `model(x, training=True)` for one example, so any
    Keras model is measured as it runs.
    """
    spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("ReadVariableOp", "Const", "Placeholder", "Identity"):
            continue
        for out in op.outputs:
            if out.dtype.is_floating and out.shape.is_fully_defined():
                total += int(np.prod(out.shape.as_list()))
    return total


def estimate(activations, adapted_elements, steps, shots, tasks, recompute=False,
             exact_steps=None, itemsize=4):
    """Bytes the inner loops in flight keep for the outer gradient (a model, not a measure).

    Per task, a second-order step keeps `3 * activations * shots` (forward, inner backward
    and what the double backward reads) plus `3 * weights`; a recomputed step keeps only
    `3 * weights` and one step's activations are live at a time; a first-order step (the
    earlier ones under truncation) keeps the weights' update only.

    Args:
        activations: `activation_elements(model)`.
        adapted_elements: Number of adapted weight elements.
        steps: Inner steps.
        shots: Support examples per task.
        tasks: Tasks whose inner loops are in memory together (the meta-batch when
            vectorized, 1 in the task loop).
        recompute, exact_steps: The mode (`parse_mode`).
        itemsize: Bytes per element.

    Returns:
        An int, bytes.
    """
    activations = _ACTIVATION_COPIES * activations * shots * itemsize
    weights = _WEIGHT_COPIES * adapted_elements * itemsize
    exact = steps if exact_steps is None else min(exact_steps, steps)
    if recompute:
        per_task = exact * weights + activations
    else:
        per_task = exact * (activations + weights)
    per_task += (steps - exact) * adapted_elements * itemsize
    return int(per_task * tasks)


def plan(model, adapted_elements, steps, shots, tasks, budget=None, mode=None):
    """Chooses how the inner loop keeps what the outer gradient needs, and logs it.

    With an explicit `mode` it is used. With a `budget`: plain second order if its
    estimate fits, else recomputation if it fits, else truncation through the most steps
    that fit (`truncated:1`, with a warning, when nothing fits).

    Args:
        model: The Keras model.
        adapted_elements, steps, shots, tasks: As `estimate`.
        budget: Bytes, `"auto"` (`available_bytes()`) or None (plain).
        mode: An explicit mode (`parse_mode`), or None.

    Returns:
        A `MemoryPlan`.
    """
    activations = activation_elements(model)
    itemsize = tf.as_dtype(model.trainable_variables[0].dtype).size

    def made(name, recompute, exact_steps, limit):
        return MemoryPlan(name, recompute, exact_steps,
                          estimate(activations, adapted_elements, steps, shots, tasks,
                                   recompute, exact_steps, itemsize), limit)

    if mode is not None or budget is None:
        recompute, exact_steps = parse_mode(mode or "plain")
        chosen = made(mode or "plain", recompute, exact_steps, None)
    else:
        limit = available_bytes() if budget == "auto" else budget
        candidates = [made("plain", False, None, limit), made("recompute", True, None, limit)]
        candidates += [made(f"truncated:{k}", False, k, limit) for k in range(steps - 1, 0, -1)]
        fitting = [c for c in candidates if c.estimate <= limit]
        chosen = fitting[0] if fitting else candidates[-1]
        if not fitting:
            _LOG.warning("No second-order mode fits memory_budget=%d bytes by the estimate "
                         "(%d bytes for truncated:1); using truncated:1.", limit,
                         chosen.estimate)
    _LOG.info("keras_meta inner loop: second_order_mode=%s (estimated %.1f MiB for %d "
              "inner steps, %d tasks in flight, budget %s)", chosen.mode,
              chosen.estimate / 2**20, steps, tasks, chosen.budget)
    return chosen
