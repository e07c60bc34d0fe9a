"""Exports that carry adaptation itself: a SavedModel that adapts to a new task.

`learner.adapt(...).export(path)` exports a model adapted in Python. `export_adaptive`
exports the learner's adaptation, so a process with plain TensorFlow (no keras_meta, no
Python-side inner loop) meets a new task, adapts to its support set and predicts. It is
built only on the learner protocol (`meta_state`, `adapt_states`, `predict_adapted`), so
every learner that implements the protocol exports with no code of its own.
"""

import numpy as np
import tensorflow as tf

from keras_meta._validation import check_steps
from keras_meta.ops import exact_batch_statistics
from keras_meta.tasks.base import TaskDistribution
from keras_meta.training import sources


def support_label_spec(tasks):
    """A `tf.TensorSpec` of one task's support targets as `tasks` gives them.

    Args:
        tasks: What the learner was fit on: a `TaskDistribution`, a `tf.data.Dataset` of
            `TaskBatch` or a `TaskBatch` of arrays; None if it was never fit.

    Returns:
        `tf.TensorSpec([None, *target_shape], dtype)`: the shots axis left free.

    Raises:
        ValueError: If `tasks` is None.
    """
    if tasks is None:
        raise ValueError(
            "Expected `support_y_spec` (e.g. tf.TensorSpec([None], tf.int32) for class ids, "
            "tf.TensorSpec([None, 1], tf.float32) for regression targets): the learner has "
            "not been fit, so the dtype and shape of its support targets are unknown. "
            "Received: support_y_spec=None"
        )
    if isinstance(tasks, TaskDistribution):
        labels = np.asarray(sources.as_task_batch(tasks.sample(1, 0)).support_y)
    elif isinstance(tasks, tf.data.Dataset):
        labels = sources.as_task_batch(tasks.element_spec).support_y
    else:
        labels = np.asarray(sources.pool_of(tasks).support_y)
    return tf.TensorSpec([None, *labels.shape[2:]], tf.as_dtype(labels.dtype))


def _examples_spec(spec, name):
    """`spec` with its shots axis free, named `name` (the signature's argument)."""
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None or spec.shape.rank < 1:
        raise TypeError(
            f"Expected `{name}_spec` to be a tf.TensorSpec of one task's examples with a "
            f"known rank >= 1 (`[shots, ...]`). Received: {name}_spec={spec!r}"
        )
    return tf.TensorSpec([None, *spec.shape[1:]], spec.dtype, name=name)


def adaptive_module(learner, support_y_spec, steps=None):
    """A `tf.Module` holding `learner`'s variables, with its adaptation as `tf.function`s.

    The module tracks the `tf.Variable`s behind the model's weights, the learner's
    `extra_meta_variables()` and every non-trainable variable (the model's and the
    learner's), and has the four functions `export_adaptive` describes, traced under
    `keras_meta.ops.exact_batch_statistics()` as `MetaTrainer.adapt` traces its own. The
    functions read the variables when called, so they follow later training.

    Args:
        learner: A `MetaTrainer` whose loss is resolved (compiled with one, or fit).
        support_y_spec: A `tf.TensorSpec` of one task's support targets; its first (shots)
            axis is freed.
        steps: Adaptation steps compiled into `adapt` (`learner.default_adapt_steps` when
            None).

    Returns:
        `(module, signatures)`: the module and its concrete functions by signature name.

    Raises:
        TypeError: If `support_y_spec` is not a `tf.TensorSpec` of rank >= 1, or `steps`
            is not an integer.
        ValueError: If `steps` is negative or the model has no known input.
    """
    steps = learner.default_adapt_steps if steps is None else check_steps(
        steps, "steps", allow_zero=True)
    support_y = _examples_spec(support_y_spec, "support_y")
    inputs = getattr(learner.model, "inputs", None)
    if not inputs:
        raise ValueError(
            "Expected a model with a known input (built from keras.Input) to give the "
            "signatures' input shape. Received: a model without `inputs`"
        )
    x_spec = tf.TensorSpec([None, *inputs[0].shape[1:]], inputs[0].dtype)
    support_x = _examples_spec(x_spec, "support_x")
    x = _examples_spec(x_spec, "x")

    module = tf.Module(name=f"{learner.name}_adaptive")
    seen, module.learner_variables = set(), []
    for v in [*learner.meta_variables(), *learner.model.non_trainable_variables,
              *learner.non_trainable_variables]:
        if id(v) not in seen:
            seen.add(id(v))
            module.learner_variables.append(v.value)

    # The nested structure of the learner's state, for `serve` to rebuild it from its
    # flat arguments; recorded when `adapt` is traced.
    structure = []

    def adapted_state(meta, support_x, support_y):
        options = {k: tf.constant(v, meta.params[0].dtype)
                   for k, v in learner.adapt_options().items()}
        return learner.adapt_states(meta, support_x, support_y, (steps,), **options)[0]

    def adapt(support_x, support_y):
        state = adapted_state(learner.meta_state(), support_x, support_y)
        structure.append(tf.nest.map_structure(lambda _: None, state))
        return {f"state_{i}": t for i, t in enumerate(tf.nest.flatten(state))}

    def serve(x, *state):
        state = tf.nest.pack_sequence_as(structure[0], list(state))
        return {"predictions": learner.predict_adapted(learner.meta_state(), state, x)}

    def serve_meta(x):
        return {"predictions": learner.model(x, training=False)}

    def adapt_and_serve(support_x, support_y, x):
        meta = learner.meta_state()
        state = adapted_state(meta, support_x, support_y)
        return {"predictions": learner.predict_adapted(meta, state, x)}

    with exact_batch_statistics():
        module.adapt = tf.function(adapt, input_signature=[support_x, support_y])
        signatures = {"adapt": module.adapt.get_concrete_function()}
        # The state's shapes as adaptation makes them: ProtoNet's class axis is the support
        # size, so it stays free.
        state_specs = [tf.TensorSpec(t.shape, t.dtype, name=name)
                       for name, t in signatures["adapt"].structured_outputs.items()]
        module.serve = tf.function(serve, input_signature=[x, *state_specs])
        module.serve_meta = tf.function(serve_meta, input_signature=[x])
        module.adapt_and_serve = tf.function(adapt_and_serve,
                                             input_signature=[support_x, support_y, x])
        for name in ("serve", "serve_meta", "adapt_and_serve"):
            signatures[name] = getattr(module, name).get_concrete_function()
    return module, signatures


def export_adaptive(learner, path, support_y_spec, steps=None):
    """Writes `learner`'s adaptation as one SavedModel that plain TensorFlow runs.

    Prefer `learner.export_adaptive(path)`, which resolves the loss and `support_y_spec`.
    Signatures (also the loaded object's methods, e.g. `loaded.adapt(sx, sy)`):

    - `adapt(support_x, support_y) -> {"state_0": ..., "state_1": ...}`: the learner's
      own adaptation (`adapt_states`) with `steps` steps: for gradient learners the inner
      loop with their rule (SGD, Meta-SGD's learned rates, MAML++'s per-step rates and
      BatchNormalization weights), for ProtoNet the prototypes. The state is flattened
      with `tf.nest.flatten` and named in that order.
    - `serve(x, state_0, state_1, ...) -> {"predictions": ...}`: `predict_adapted` at the
      state `adapt` returned.
    - `serve_meta(x) -> {"predictions": ...}`: the plain model at the meta-weights,
      `model(x, training=False)` (moving BatchNorm statistics; ProtoNet's embeddings).
    - `adapt_and_serve(support_x, support_y, x) -> {"predictions": ...}`: both in one call.

    The shots axis of `support_x`/`support_y` is free (any support size); the number of
    adaptation steps is fixed at export (a `steps` signature argument is not offered
    yet). Adaptation options take the learner's defaults (e.g. the training `inner_lr`).
    Predictions use the batch statistics of `x`, as `predict_adapted` does: pass a task's
    inputs in one batch.

    Args:
        learner: A `MetaTrainer` whose loss is resolved.
        path: Directory to write the SavedModel to.
        support_y_spec: A `tf.TensorSpec` of one task's support targets.
        steps: Adaptation steps (`learner.default_adapt_steps` when None).

    Returns:
        The `tf.Module` that was saved.

    Raises:
        TypeError, ValueError: As `adaptive_module`, before anything is written.
    """
    module, signatures = adaptive_module(learner, support_y_spec, steps)
    with exact_batch_statistics():
        tf.saved_model.save(module, str(path), signatures=signatures)
    return module
