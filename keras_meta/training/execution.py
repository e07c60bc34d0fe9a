"""How a meta-step runs: the execution-mode choice and the compiled-function cache.

A meta-step maps a per-task function over the tasks of a meta-batch, either in a
`tf.while_loop` (one task's tape at a time: short first calls, flat memory) or with
`tf.vectorized_map` (all tasks at once: fastest for dense models), each with or without
XLA.
"""

import contextlib

import keras
import tensorflow as tf

from keras_meta import _compat
from keras_meta._validation import check_choice

CHOICES = (True, False, "auto")


def has_convolutions(model):
    return any("conv" in type(layer).__name__.lower() for layer in _compat.flatten_layers(model))


def has_recurrence(model):
    return any(isinstance(layer, keras.layers.RNN) for layer in _compat.flatten_layers(model))


def choose(jit_request, vectorize_request, model):
    """`((jit, why), (vectorize, why))`: what "auto" stands for on this machine and model,
    and the reason, in words.

    Measured in benchmarks/meta_step.py: on CPU, XLA over task-vectorized steps is the
    fastest for dense models, while convolutions are fastest in the plain task loop without
    XLA (vectorized convolutions are slower and far larger in memory, and XLA:CPU
    convolutions are an order of magnitude slower than oneDNN's). GPUs get XLA, vectorized
    over tasks for dense models as JAX would (not measured on a GPU here).
    """
    check_choice(jit_request, "jit_compile", CHOICES)
    check_choice(vectorize_request, "vectorize", CHOICES)
    recurrent = has_recurrence(model)
    if vectorize_request is True and recurrent:
        # pfor cannot vectorize the while loop of a Keras RNN layer over tasks ("`dtype`
        # variant is not compatible with int64").
        raise ValueError(
            "Expected vectorize=False or 'auto' for a model with recurrent layers (tf.vectorized_map "
            "cannot vectorize their loop over tasks; 'auto' runs them in the task loop). "
            "Received: vectorize=True")
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    convolutional = has_convolutions(model)
    if jit_request != "auto":
        jit = (bool(jit_request), "requested")
    elif on_gpu:
        jit = (True, "auto: a GPU is visible")
    else:
        jit = (not convolutional, "auto: CPU, " + (
            "convolutions (XLA:CPU convolutions are slow)" if convolutional
            else "no convolutions"))
    if vectorize_request != "auto":
        vectorize = (bool(vectorize_request), "requested")
    else:
        vectorize = (not (convolutional or recurrent), "auto: " + (
            "recurrent layers" if recurrent else "convolutions" if convolutional
            else "a dense model"))
    return jit, vectorize


def resolve(jit_request, vectorize_request, model):
    """The `(jit, vectorize)` pair that "auto" stands for on this machine and model."""
    (jit, _), (vectorize, _) = choose(jit_request, vectorize_request, model)
    return jit, vectorize


def summary(jit_request, vectorize_request, model, sampler, steps_per_execution, run_eagerly,
            replicas=1):
    """One paragraph saying how `fit`'s meta-steps run, and why (the learner's
    `execution_summary`)."""
    (jit, jit_why), (vectorize, vectorize_why) = choose(jit_request, vectorize_request, model)
    lines = [f"jit_compile={jit} ({jit_why}); vectorize={vectorize} ({vectorize_why}): "
             + ("tf.vectorized_map over tasks" if vectorize else "a tf.while_loop over tasks")]
    if sampler is None:
        lines.append("tasks: a tf.data dataset (Keras's input pipeline)")
    else:
        lines.append(f"tasks: sampled by {sampler.describe()}")
    if run_eagerly:
        lines.append("run_eagerly=True: every meta-step runs eagerly")
    elif replicas > 1:
        lines.append(f"each meta-step split across {replicas} replicas")
    elif sampler is not None and sampler.in_graph_ops and jit:
        lines.append(f"one XLA program per call of {steps_per_execution} meta-step(s): "
                     "sampling, inner loops, outer gradient and optimizer update")
    else:
        lines.append(f"{steps_per_execution} meta-step(s) per call, each "
                     + ("an XLA-compiled update" if jit else "a TensorFlow graph"))
    return "; ".join(lines)


@contextlib.contextmanager
def generic_recurrent_kernels(model):
    """Within the block, the model's LSTM/GRU layers run Keras's generic kernel, not cuDNN.

    Keras 3's LSTM/GRU try the fused cuDNN kernel (`keras.backend.lstm`/`gru`) whenever
    `layer.use_cudnn` is "auto" or True and a GPU is visible; that kernel has no second
    derivative (DESIGN.md §5), so a second-order meta-gradient through it fails on GPU.
    `use_cudnn` is read when the layer is called, so setting it to False while the
    meta-step is traced makes the traced graph use the generic loop; the layers get their
    own setting back afterwards (adaptation and inference outside the meta-gradient may
    still use cuDNN, which first derivatives support).
    """
    layers = [layer for layer in _compat.flatten_layers(model)
              if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU))]
    saved = [layer.use_cudnn for layer in layers]
    for layer in layers:
        layer.use_cudnn = False
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.use_cudnn = value


@contextlib.contextmanager
def without_addn_scheduling():
    """Calls of `tf.function`s inside run graphs optimized without grappler's AddN scheduling.

    When grappler's static estimate of a graph's peak memory exceeds 80% of the device's
    free memory (the host's free RAM on CPU: MAML second order through 20 inner steps of a
    conv4 net, benchmarks/RESULTS.md), its memory optimizer turns each AddN of more than two
    inputs live at the peak into a `TemporaryVariable` that `AssignAdd`s accumulate. The
    variable is created after a control edge from one input; in a `tf.while_loop` that input
    can be a loop variable's `Switch`, whose control edge fires in the loop's exit iteration
    too, where the additions and the `DestroyTemporaryVariable` are dead. The variable
    then outlives the call in the eager context's step container, which all calls share,
    and the next call fails with `AlreadyExistsError`. The options are the calling
    thread's and are restored on exit, so other functions keep the user's configuration;
    the rest of the memory optimizer (GPU swapping) stays, and an explicit
    `memory_optimization` is left as the user set it.
    """
    context, options_class = _compat.function_call_options()
    options = context.function_call_options
    config = tf.compat.v1.ConfigProto.FromString(options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    if rewrite.memory_optimization != type(rewrite).DEFAULT_MEM_OPT:
        yield
        return
    rewrite.memory_optimization = type(rewrite).SWAPPING_HEURISTICS
    context.function_call_options = options_class(options.executor_type, config)
    try:
        yield
    finally:
        context.function_call_options = options


class FunctionCache:
    """`tf.function`s of a learner, one per key and execution mode, made once."""

    def __init__(self):
        self._functions = {}

    def clear(self):
        self._functions = {}

    def get(self, key, fn, jit, vectorize):
        """`fn` as a tf.function (XLA when `jit`), cached per key and mode.

        AutoGraph is off: the library's step functions write their control flow as TF ops
        (`tf.cond`, `tf.while_loop`), and converting every Keras and keras_meta function
        they call took about half of a first `fit`'s CPU time (benchmarks/RESULTS.md).
        """
        cache_key = (key, jit, vectorize)
        if cache_key not in self._functions:
            self._functions[cache_key] = tf.function(fn, jit_compile=jit, reduce_retracing=True,
                                                     autograph=False)
        return self._functions[cache_key]

    def tracing_counts(self):
        """`{(key, jit, vectorize): times traced}` of the functions made so far: a function
        traced more than once was retraced (tests/training/test_retracing.py)."""
        return {k: f.experimental_get_tracing_count() for k, f in self._functions.items()}


def mean_over_tasks(stacked, old):
    """The task mean of a floating non-trainable; other dtypes keep their old value."""
    if stacked.dtype.is_floating:
        return tf.reduce_mean(stacked, axis=0)
    return old
