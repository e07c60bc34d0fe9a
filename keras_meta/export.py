"""Exports that carry adaptation itself: a SavedModel that adapts to a new task.

`learner.adapt(...).export(path)` exports a model adapted in Python. `export_adaptive`
exports the learner's adaptation, so a process with plain TensorFlow (no keras_meta, no
Python-side inner loop) meets a new task, adapts to its support set and predicts. It is
built only on the learner protocol (`meta_state`, `adapt_states`, `predict_adapted`), so
every learner that implements the protocol exports with no code of its own.
"""

import collections
import contextlib
import functools
import os
import tempfile

import numpy as np
import tensorflow as tf
from google.protobuf import text_format

from keras_meta import _compat, inner
from keras_meta._validation import check_bool, check_steps
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


def _broadcast_gradient_args(s0, s1, name=None):
    """`BroadcastGradientArgs` from TFLite built-in ops: the axes each operand was
    broadcast along (axes where both are 1 may be listed or not: summing over them changes
    nothing)."""
    del name
    rank = tf.maximum(tf.size(s0), tf.size(s1))
    padded = [tf.concat([tf.ones([rank - tf.size(s)], s.dtype), s], 0) for s in (s0, s1)]
    axes = tf.range(rank, dtype=s0.dtype)
    return tuple(tf.boolean_mask(axes, (mine == 1) & (other != 1))
                 for mine, other in (padded, padded[::-1]))


def _relu_grad(gradients, features, name=None):
    """`ReluGrad` from TFLite built-in ops (the same values)."""
    del name
    return tf.where(features > 0, gradients, tf.zeros_like(gradients))


def _static_filter_shape(filter_sizes):
    """The `[kh, kw, in, out]` that `filter_sizes` holds, if known when tracing.

    `_Conv2DGrad` passes the filter's `ShapeN` output, which constant folding does not
    reach: its static shape is read from the filter itself.
    """
    value = tf.get_static_value(filter_sizes)
    if value is None and getattr(filter_sizes, "op", None) is not None and (
            filter_sizes.op.type == "ShapeN"):
        value = filter_sizes.op.inputs[filter_sizes.value_index].shape.as_list()
    return None if value is None or None in list(value) else [int(v) for v in value]


def _conv2d_backprop_filter(input, filter_sizes, out_backprop, strides, padding,
                            use_cudnn_on_gpu=True, explicit_paddings=(), data_format="NHWC",
                            dilations=(1, 1, 1, 1), name=None, original=None):
    """`Conv2DBackpropFilter` from TFLite built-in ops, for NHWC inputs of known height and
    width, `"SAME"`/`"VALID"` padding, any strides and no dilation (other cases go to
    `original`, TensorFlow's op):

    `dW[i, j, c, o] = sum_{n, h, w} x_pad[n, h * s_h + i, w * s_w + j, c] * dy[n, h, w, o]`,
    one strided slice of the padded input per filter tap, stacked on the channel axis
    (`[n, h, w, kh * kw * in]`), times `dy` in one matrix product: the same sums as
    TensorFlow's kernel, in another order (float rounding only).
    """
    shape = _static_filter_shape(filter_sizes)
    spatial = input.shape[1:3].as_list() + out_backprop.shape[1:3].as_list()
    if (data_format not in ("NHWC", b"NHWC") or padding not in ("SAME", "VALID", b"SAME", b"VALID")
            or list(dilations) != [1, 1, 1, 1] or shape is None or None in spatial):
        return original(input, filter_sizes, out_backprop, strides, padding,
                        use_cudnn_on_gpu=use_cudnn_on_gpu, explicit_paddings=explicit_paddings,
                        data_format=data_format, dilations=dilations, name=name)
    kh, kw, channels, filters = shape
    height, width, out_h, out_w = spatial
    stride_h, stride_w = strides[1], strides[2]
    if padding in ("SAME", b"SAME"):
        # TensorFlow's SAME padding: the odd pixel goes after.
        pad_h = max((out_h - 1) * stride_h + kh - height, 0)
        pad_w = max((out_w - 1) * stride_w + kw - width, 0)
        input = tf.pad(input, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                               [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
    taps = [input[:, i:i + (out_h - 1) * stride_h + 1:stride_h,
                  j:j + (out_w - 1) * stride_w + 1:stride_w, :]
            for i in range(kh) for j in range(kw)]
    patches = tf.reshape(tf.concat(taps, -1), [-1, kh * kw * channels])
    grad = tf.matmul(patches, tf.reshape(out_backprop, [-1, filters]), transpose_a=True)
    return tf.reshape(grad, shape)


def _softmax_cross_entropy_with_logits(features, labels, name=None):
    """`SoftmaxCrossEntropyWithLogits` from TFLite built-in ops: `(loss, backprop)`,
    `-sum(labels * log_softmax(features))` and `softmax(features) - labels`."""
    del name
    log_p = tf.nn.log_softmax(features)
    return -tf.reduce_sum(labels * log_p, -1), tf.exp(log_p) - labels


def _sparse_softmax_cross_entropy_with_logits(features, labels, name=None):
    """`SparseSoftmaxCrossEntropyWithLogits` from TFLite built-in ops, over one-hot labels
    (a label outside `[0, classes)` is an all-zero row: a zero loss, where TensorFlow's
    CPU kernel raises)."""
    return _softmax_cross_entropy_with_logits(
        features, tf.one_hot(labels, tf.shape(features)[-1], dtype=features.dtype), name)


# The TensorFlow ops only a TFLite export traces from built-in ones.
_TFLITE_TRACED = ("Conv2DBackpropFilter", "SoftmaxCrossEntropyWithLogits")

# By the name of the TensorFlow op function they replace: whether the replacement has the
# same values (else only rounding differs, and only the TFLite export uses it), and a
# factory of the replacement from the original.
_BUILTIN_KERNELS = {
    "broadcast_gradient_args": (True, lambda original: _broadcast_gradient_args),
    "relu_grad": (True, lambda original: _relu_grad),
    "conv2d_backprop_filter": (
        False, lambda original: functools.partial(_conv2d_backprop_filter, original=original)),
    "softmax_cross_entropy_with_logits": (
        False, lambda original: _softmax_cross_entropy_with_logits),
    "sparse_softmax_cross_entropy_with_logits": (
        False, lambda original: _sparse_softmax_cross_entropy_with_logits),
}


@contextlib.contextmanager
def _builtin_gradients(exact_only=True):
    """Gradients and losses traced without TensorFlow ops that TFLite has no built-in
    kernel for.

    `tf.lite.Interpreter` of the `tensorflow` package links no TensorFlow (Flex) kernels.
    Ops of the inner loop and its gradients that have none: `BroadcastGradientArgs` (where
    both operands of a broadcasting op have a free shots axis, TensorFlow asks it for the
    reduction axes at run time), `ReluGrad`, a convolution's filter gradient
    `Conv2DBackpropFilter` and the (sparse) softmax cross-entropy losses. While the export
    traces, the registered gradients and `tf.nn` losses build them from built-in ops
    instead: with the same values for the first two, and, only when `exact_only` is False
    (the TFLite export), the same sums in another order for the others.

    Args:
        exact_only: Replace only the ops whose replacements have the same values.
    """
    kernels = [(module, name) for module, name in _compat.gradient_kernels()
               if _BUILTIN_KERNELS[name][0] or not exact_only]
    originals = {(module, name): getattr(module, name) for module, name in kernels}
    try:
        for (module, name), original in originals.items():
            setattr(module, name, _BUILTIN_KERNELS[name][1](original))
        yield
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)


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


def to_tflite(saved_model_dir, path, select_tf_ops=False):
    """Converts an adaptive SavedModel's signatures to one TFLite model file.

    Built-in TFLite ops only by default: `tf.lite.Interpreter` of the `tensorflow`
    package (2.21) links no TensorFlow (Flex) kernels. The exported inner loop converts to
    built-in ops for dense and convolutional models (`Conv2D` with `"same"`/`"valid"`
    padding, any strides, no dilation; ReLU, tanh, BatchNormalization, Flatten, Dense)
    with an MSE or (sparse) softmax cross-entropy loss: `export_adaptive` traces the
    gradient ops without a built-in kernel from built-in ones (`BroadcastGradientArgs`,
    `ReluGrad`, and, with `format="tflite"`, a convolution's filter gradient as strided
    slices and one matrix product and the softmax cross-entropies from `log_softmax`; a
    convolution's input gradient is TFLite's `TRANSPOSE_CONV`). A SavedModel written with
    `format="saved_model"` keeps TensorFlow's filter-gradient and cross-entropy kernels
    (the ops of in-Python adaptation), so converting it here is refused for such a model.
    An op that has no built-in kernel (e.g. max pooling's gradient `MaxPoolGrad`, a dilated
    convolution's filter gradient) is refused, naming it, unless `select_tf_ops=True` (for
    a runtime that links the Flex delegate). Run a signature with
    `tf.lite.Interpreter(model_path=path).get_signature_runner("adapt_and_serve")`.
    The run-time checks on `steps` are dropped by the converter: a `steps` above
    `max_steps` takes `max_steps` steps.

    Args:
        saved_model_dir: An adaptive SavedModel (`export_adaptive`).
        path: The `.tflite` file to write.
        select_tf_ops: Allow TensorFlow ops without a built-in kernel (`SELECT_TF_OPS`).

    Returns:
        The path written.

    Raises:
        ValueError: If the converter refuses the model (the message names the op).
        TypeError: If `select_tf_ops` is not a bool.
    """
    check_bool(select_tf_ops, "select_tf_ops")
    signatures = ("adapt", "serve", "serve_meta", "adapt_and_serve")
    with tempfile.TemporaryDirectory() as wrapped:
        # The converter takes a root object with a `serve` attribute for a Keras
        # `model.export` artifact and converts only that endpoint: re-saved under a root
        # without it, every signature is converted.
        loaded = tf.saved_model.load(str(saved_model_dir))
        root = tf.Module()
        root.adaptive = loaded
        tf.saved_model.save(root, wrapped, signatures={k: loaded.signatures[k]
                                                        for k in signatures})
        converter = tf.lite.TFLiteConverter.from_saved_model(wrapped,
                                                             signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if select_tf_ops else [])
        converter.experimental_enable_resource_variables = True
        try:
            flat = converter.convert()
        except Exception as error:  # The converter raises its own ConverterError.
            hint = ("" if select_tf_ops or not any(op in str(error) for op in _TFLITE_TRACED)
                    else " (a SavedModel export keeps TensorFlow's kernel for it: export with "
                    "`export_adaptive(..., format='tflite')` to trace it from built-in ops)")
            raise ValueError(
                "Expected an adaptive SavedModel whose ops TFLite supports (built-in ops"
                f"{'' if select_tf_ops else ' only; select_tf_ops=False'}){hint}. Received: "
                f"saved_model_dir={str(saved_model_dir)!r}, which fails with: {error}"
            ) from error
    with open(path, "wb") as f:
        f.write(flat)
    return path


# The namedtuples of TF-Agents' `TimeStep` and `PolicyStep`, by name and fields: a
# SavedModel records a namedtuple as such, so a loaded `action` takes TF-Agents' own
# `TimeStep` and returns a `PolicyStep`-shaped tuple, with no TF-Agents import here.
_TimeStep = collections.namedtuple("TimeStep", ("step_type", "reward", "discount", "observation"))
_PolicyStep = collections.namedtuple("PolicyStep", ("action", "state", "info"))
_Trajectory = collections.namedtuple("Trajectory", (
    "step_type", "observation", "action", "policy_info", "next_step_type", "reward",
    "discount"))


def export_adaptive_policy(learner, path):
    """Writes a MAML-RL policy's adaptation as one SavedModel that plain TensorFlow runs.

    Prefer `MAMLRL.export_adaptive(path)`. Signatures (also the loaded object's methods):

    - `adapt(observations, actions, advantages) -> {"weights_0": ..., ...}`: one inner
      policy-gradient step from the meta-weights, `phi = theta - inner_lr * grad_theta
      mean(-log pi_theta(a | o) * A)`, on a batch of transitions `[N, ...]` of one task:
      MAML-RL's inner step (`MAMLRL.adapt_step`) with every row valid. `advantages` are
      the caller's (e.g. the `MAMLRL.process` ones: baseline, GAE, normalisation).
    - `action(observation, weights_0, ...) -> {"action": ...}`: the policy's deterministic
      action (Gaussian mean, greedy category) at the adapted weights, `observation`
      `[batch, observation_dim]`.
    - `action_meta(observation) -> {"action": ...}`: the same at the meta-weights.

    It is also a TF-Agents policy as `tf_agents.policies.PolicySaver` writes one, whose
    policy state is the weights, one set per batch row (each row of a batched
    environment may act for its own task):

    - `get_initial_state(batch_size) -> {"weights_0": [batch_size, ...], ...}`: the
      meta-weights on every row.
    - `adapt_state(observations, actions, advantages, batch_size)`: `adapt`'s weights on
      `batch_size` rows, the policy state of rows acting for that task (concatenate the
      states of several tasks along the first axis for rows of different tasks).
    - The loaded object's `action(time_step, policy_state)` method (TF-Agents' `TimeStep`
      of `[batch, ...]` tensors; the method also takes `action`'s `(observation,
      weights_0, ...)`) returns a `PolicyStep` `(action, state, info=())`: each
      row's deterministic action at its own weights, as `action` gives it, in the
      policy's units (like `integrations.tf_agents.KerasPolicy`; not mapped by
      `learner.env_actions`), and the state unchanged.
    - `get_train_step() -> int64`: the learner's meta-iteration at export;
      `get_metadata() -> {}`; the `model_variables` attribute.
    - `policy_specs.pbtxt` beside it, so TF-Agents'
      `SavedModelPyTFEagerPolicy(path, load_specs_from_pbtxt=True)` loads it with no
      specs given and drives an environment after `adapt_state`.

    Args:
        learner: A `keras_meta.rl.MAMLRL`.
        path: Directory to write the SavedModel to.

    Returns:
        The `tf.Module` that was saved.
    """
    policy = learner.policy
    dtype = tf.as_dtype(policy.trainable_variables[0].dtype)
    observations = tf.TensorSpec([None, policy.observation_dim], dtype, name="observations")
    observation = tf.TensorSpec([None, policy.observation_dim], dtype, name="observation")
    # The action's dtype and width as the policy produces them (float means, int64 ids).
    sample = tf.function(lambda o: policy.mode(None, o)).get_concrete_function(
        observations).structured_outputs
    actions = tf.TensorSpec(sample.shape, sample.dtype, name="actions")
    advantages = tf.TensorSpec([None], dtype, name="advantages")
    batch_size = tf.TensorSpec([], tf.int32, name="batch_size")
    weight_specs = [tf.TensorSpec(v.shape, v.dtype, name=f"weights_{i}")
                    for i, v in enumerate(policy.trainable_variables)]
    state_spec = {s.name: tf.TensorSpec([None, *s.shape], s.dtype, name=s.name)
                  for s in weight_specs}
    time_step = _TimeStep(tf.TensorSpec([None], tf.int32, name="step_type"),
                          tf.TensorSpec([None], tf.float32, name="reward"),
                          tf.TensorSpec([None], tf.float32, name="discount"), observation)

    module = tf.Module(name=f"{policy.name}_adaptive")
    module.policy_variables = [v.value for v in policy.variables]
    module.model_variables = module.policy_variables

    def adapt(observations, actions, advantages):
        def loss(params, step):
            del step
            log_p = policy.log_prob(params, observations, actions)
            return tf.reduce_mean(-log_p * advantages)

        fast = inner.adapt(loss, policy.weights_list(), inner.sgd(learner.inner_lr), 1,
                           first_order=True).params
        return {f"weights_{i}": w for i, w in enumerate(fast)}

    def on_rows(weights, batch_size):
        return {name: tf.tile(w[None], [batch_size] + [1] * w.shape.rank)
                for name, w in weights.items()}

    def adapt_state(observations, actions, advantages, batch_size):
        return on_rows(module.adapt(observations, actions, advantages), batch_size)

    def get_initial_state(batch_size):
        return on_rows({f"weights_{i}": w for i, w in enumerate(policy.weights_list())},
                       batch_size)

    def action(observation, *weights):
        if isinstance(observation, _TimeStep):
            return policy_action(observation, *weights)
        return {"action": policy.mode(list(weights), observation)}

    def policy_action(time_step, policy_state):
        # Each row at its own weights: the one-row forward pass mapped over the rows.
        rows = [tf.cast(time_step.observation, dtype),
                *(policy_state[s.name] for s in weight_specs)]
        chosen = tf.map_fn(lambda row: policy.mode(list(row[1:]), row[0][None])[0], rows,
                           fn_output_signature=tf.TensorSpec(actions.shape[1:], actions.dtype))
        return _PolicyStep(chosen, policy_state, ())

    def action_meta(observation):
        return {"action": policy.mode(None, observation)}

    module.adapt = tf.function(adapt, input_signature=[observations, actions, advantages])
    module.adapt_state = tf.function(
        adapt_state, input_signature=[observations, actions, advantages, batch_size])
    module.get_initial_state = tf.function(get_initial_state, input_signature=[batch_size])
    module.action = tf.function(action)
    module.action_meta = tf.function(action_meta, input_signature=[observation])
    train_step = tf.constant(learner.iteration, tf.int64)
    module.get_train_step = tf.function(lambda: train_step, input_signature=[])
    module.get_metadata = tf.function(lambda: {}, input_signature=[])
    signatures = {name: getattr(module, name).get_concrete_function()
                  for name in ("adapt", "adapt_state", "get_initial_state", "action_meta",
                               "get_train_step", "get_metadata")}
    signatures["action"] = module.action.get_concrete_function(observation, *weight_specs)
    # The TF-Agents method: `action(time_step, policy_state)`.
    module.action.get_concrete_function(time_step, state_spec)
    tf.saved_model.save(module, str(path), signatures=signatures)
    _write_policy_specs(path, time_step, actions, state_spec)
    return module


def _write_policy_specs(path, time_step, action, state_spec):
    """Writes `policy_specs.pbtxt` as `PolicySaver` does: the unbatched collect data spec
    (a `Trajectory`) and policy state spec, for `SavedModelPyTFEagerPolicy(...,
    load_specs_from_pbtxt=True)`."""
    def unbatched(spec):
        return tf.TensorSpec(spec.shape[1:], spec.dtype, name=spec.name)

    trajectory = _Trajectory(
        step_type=unbatched(time_step.step_type), observation=unbatched(time_step.observation),
        action=unbatched(action), policy_info=(), next_step_type=unbatched(time_step.step_type),
        reward=unbatched(time_step.reward), discount=unbatched(time_step.discount))
    specs = {"collect_data_spec": trajectory,
             "policy_state_spec": {k: unbatched(s) for k, s in state_spec.items()}}
    with open(os.path.join(str(path), "policy_specs.pbtxt"), "w") as f:
        f.write(text_format.MessageToString(_compat.encode_structure(specs)))
