"""Exports that carry adaptation itself: a SavedModel that adapts to a new task.

`learner.adapt(...).export(path)` exports a model adapted in Python. `export_adaptive`
exports the learner's adaptation, so a process with plain TensorFlow (no keras_meta, no
Python-side inner loop) meets a new task, adapts to its support set and predicts. It is
built only on the learner protocol (`meta_state`, `adapt_states`, `predict_adapted`), so
every learner that implements the protocol exports with no code of its own.

TFLite conversion lives in `keras_meta.export_tflite` and the MAML-RL policy export in
`keras_meta.rl.policy_export`; `to_tflite` and `export_adaptive_policy` are re-exported here.
"""

import tempfile

import numpy as np
import tensorflow as tf

from keras_meta._validation import check_steps
from keras_meta.export_tflite import _builtin_gradients, to_tflite
from keras_meta.ops import exact_batch_statistics
# Re-exported so that `keras_meta.export.export_adaptive_policy` keeps working.
from keras_meta.rl.policy_export import export_adaptive_policy
from keras_meta.tasks.base import TaskDistribution
from keras_meta.training import sources

__all__ = [
    "adaptive_module",
    "export_adaptive",
    "export_adaptive_policy",
    "support_label_spec",
    "to_tflite",
]


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


def _step_count(steps, max_steps, default_steps, dynamic):
    """`(steps, max_steps)` checked: the default step count and the compiled bound."""
    steps = default_steps if steps is None else check_steps(steps, "steps", allow_zero=True)
    if max_steps is None:
        return steps, steps
    max_steps = check_steps(max_steps, "max_steps", allow_zero=True)
    if not dynamic:
        raise ValueError(
            "Expected `max_steps=None`: this learner's adaptation has no step count to pass "
            f"at run time. Received: max_steps={max_steps}")
    if max_steps < steps:
        raise ValueError(f"Expected `max_steps` >= steps={steps} (the default step count). "
                         f"Received: max_steps={max_steps}")
    return steps, max_steps



def adaptive_module(learner, support_y_spec, steps=None, max_steps=None, for_tflite=False):
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
        steps: Adaptation steps when none are passed (`learner.default_adapt_steps` when
            None).
        max_steps: The most steps the `steps` argument may ask for (`steps` when None);
            only for learners with `adapt_state_upto` (a step count at run time).
        for_tflite: Also trace convolution filter gradients and softmax cross-entropies
            from built-in TFLite ops (the same sums in another order; `_builtin_gradients`).
            Otherwise the functions run the very ops of in-Python adaptation.

    Returns:
        `(module, signatures)`: the module and its concrete functions by signature name.

    Raises:
        TypeError: If `support_y_spec` is not a `tf.TensorSpec` of rank >= 1, or `steps`
            or `max_steps` is not an integer.
        ValueError: If `steps` is negative, `max_steps` is below `steps` or given for a
            learner without a step count, or the model has no known input.
    """
    # A learner whose adaptation takes gradient steps compiles one graph of `max_steps`
    # steps that takes as many as asked for; ProtoNet's prototypes take no steps.
    dynamic = hasattr(learner, "adapt_state_upto")
    steps, max_steps = _step_count(steps, max_steps, learner.default_adapt_steps, dynamic)
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
    step_spec = [tf.TensorSpec([], tf.int32, name="steps")] if dynamic else []

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

    def adapted_state(meta, support_x, support_y, *count):
        options = {k: tf.constant(v, meta.params[0].dtype)
                   for k, v in learner.adapt_options().items()}
        if not dynamic:
            return learner.adapt_states(meta, support_x, support_y, (steps,), **options)[0]
        count, = count
        checks = [tf.debugging.assert_non_negative(count, message="steps"),
                  tf.debugging.assert_less_equal(count, max_steps, message="steps")]
        with tf.control_dependencies(checks):
            count = tf.identity(count)
        return learner.adapt_state_upto(meta, support_x, support_y, count, max_steps,
                                        **options)

    def adapt(support_x, support_y, *count):
        if dynamic and not count:
            return signatures["adapt"](support_x=support_x, support_y=support_y,
                                       steps=tf.constant(steps))
        state = adapted_state(learner.meta_state(), support_x, support_y, *count)
        structure.append(tf.nest.map_structure(lambda _: None, state))
        return {f"state_{i}": t for i, t in enumerate(tf.nest.flatten(state))}

    def serve(x, *state):
        state = tf.nest.pack_sequence_as(structure[0], list(state))
        return {"predictions": learner.predict_adapted(learner.meta_state(), state, x)}

    def serve_meta(x):
        return {"predictions": learner.model(x, training=False)}

    def adapt_and_serve(support_x, support_y, x, *count):
        # The traced `adapt` and `serve`, called rather than traced again.
        state = signatures["adapt"](support_x=support_x, support_y=support_y,
                                    **({"steps": count[0]} if count else
                                       {"steps": tf.constant(steps)} if dynamic else {}))
        return signatures["serve"](x=x, **state)

    with exact_batch_statistics(), _builtin_gradients(exact_only=not for_tflite):
        module.adapt = tf.function(adapt)
        signatures = {"adapt": module.adapt.get_concrete_function(support_x, support_y,
                                                                  *step_spec)}
        # The state's shapes as adaptation makes them: ProtoNet's class axis is the support
        # size, so it stays free.
        state_specs = [tf.TensorSpec(t.shape, t.dtype, name=name)
                       for name, t in signatures["adapt"].structured_outputs.items()]
        module.serve = tf.function(serve, input_signature=[x, *state_specs])
        module.serve_meta = tf.function(serve_meta, input_signature=[x])
        module.adapt_and_serve = tf.function(adapt_and_serve)
        for name in ("serve", "serve_meta"):
            signatures[name] = getattr(module, name).get_concrete_function()
        signatures["adapt_and_serve"] = module.adapt_and_serve.get_concrete_function(
            support_x, support_y, x, *step_spec)
        if dynamic:
            # The loaded methods also take no `steps` (the default step count).
            module.adapt.get_concrete_function(support_x, support_y)
            module.adapt_and_serve.get_concrete_function(support_x, support_y, x)
    return module, signatures


def export_adaptive(learner, path, support_y_spec, steps=None, max_steps=None,
                    format="saved_model"):
    """Writes `learner`'s adaptation as one SavedModel (or TFLite model) that plain TensorFlow runs.

    Prefer `learner.export_adaptive(path)`, which resolves the loss and `support_y_spec`.
    Signatures (also the loaded object's methods, e.g. `loaded.adapt(sx, sy)`):

    - `adapt(support_x, support_y, steps) -> {"state_0": ..., "state_1": ...}`: the
      learner's own adaptation with `steps` steps (a scalar int32, `0 <= steps <=
      max_steps`): for gradient learners the inner loop with their rule (SGD, Meta-SGD's
      learned rates, MAML++'s per-step rates and BatchNormalization weights), for ProtoNet
      the prototypes (no `steps` argument: they take none). The loaded object's method
      also takes `(support_x, support_y)` alone, with the default `steps`. The state is
      flattened with `tf.nest.flatten` and named in that order.
    - `serve(x, state_0, state_1, ...) -> {"predictions": ...}`: `predict_adapted` at the
      state `adapt` returned.
    - `serve_meta(x) -> {"predictions": ...}`: the plain model at the meta-weights,
      `model(x, training=False)` (moving BatchNorm statistics; ProtoNet's embeddings).
    - `adapt_and_serve(support_x, support_y, x, steps) -> {"predictions": ...}`: both in
      one call.

    The shots axis of `support_x`/`support_y` is free (any support size). The graph holds
    `max_steps` inner steps, each taken only while its index is below `steps`, so a step
    count costs its own steps only. Adaptation options take the learner's defaults (e.g.
    the training `inner_lr`). Predictions use the batch statistics of `x`, as
    `predict_adapted` does: pass a task's inputs in one batch.

    Args:
        learner: A `MetaTrainer` whose loss is resolved.
        path: Directory to write the SavedModel to (`format="saved_model"`), or the
            `.tflite` file (`format="tflite"`, see `to_tflite`).
        support_y_spec: A `tf.TensorSpec` of one task's support targets.
        steps: The default step count (`learner.default_adapt_steps` when None).
        max_steps: The most steps `steps` may ask for (`steps` when None).
        format: `"saved_model"` or `"tflite"`.

    Returns:
        The `tf.Module` that was saved.

    Raises:
        TypeError, ValueError: As `adaptive_module`, or on an unknown `format`, before
            anything is written.
    """
    if format not in ("saved_model", "tflite"):
        raise ValueError("Expected `format` to be 'saved_model' or 'tflite'. Received: "
                         f"format={format!r}")
    module, signatures = adaptive_module(learner, support_y_spec, steps, max_steps,
                                         for_tflite=format == "tflite")
    if format == "tflite":
        with tempfile.TemporaryDirectory() as saved_model:
            with exact_batch_statistics():
                tf.saved_model.save(module, saved_model, signatures=signatures)
            to_tflite(saved_model, path)
        return module
    with exact_batch_statistics():
        tf.saved_model.save(module, str(path), signatures=signatures)
    return module
