"""`MetaLearner`: the Keras 3 model that every supervised meta-learner extends.

A meta-learner wraps an unmodified, built Keras 3 model. Its `train_step` runs one
meta-step over a meta-batch of tasks: an inner loop per task on the support set at fast
weights (`model.stateless_call`, never variable assignment), a loss on the query set at
the adapted weights, and one outer optimizer update of the meta-weights. Because it is a
`keras.Model`, `fit`, `evaluate`, History, the progress bar, callbacks and `.keras`
saving work as usual.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_meta import inner
from keras_meta._vectorize import map_tasks
from keras_meta.functional import (
    check_tensorflow_backend,
    exact_batch_statistics,
    forward,
    variable_values,
)
from keras_meta.tasks.base import (
    TaskBatch,
    TaskDistribution,
    check_positive_int,
    check_seed,
    step_seed,
)

_EXECUTION_CHOICES = (True, False, "auto")
_DEFAULT_VALIDATION_BATCHES = 4
# Host memory for the meta-batches one call of `steps_per_execution` steps samples at once.
_SAMPLE_CHUNK_BYTES = 64 * 2**20


def _check_choice(value, name):
    if value not in _EXECUTION_CHOICES:
        raise ValueError(
            f"Expected `{name}` to be True, False or 'auto'. Received: {name}={value!r}"
        )
    return value


def check_learning_rate(value, name="inner_lr"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"Expected `{name}` to be a positive number. Received: {name}={value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive number. Received: {name}={value!r}")
    return float(value)


def check_steps(value, name="inner_steps", allow_zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected `{name}` to be an integer. Received: {name}={value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"Expected `{name}` to be {kind} integer. Received: {name}={value!r}")
    return int(value)


def _check_model(model):
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
    return model


def as_task_batch(data, name="tasks"):
    """Normalises a TaskBatch-like structure (namedtuple, 4-sequence, dict, 1-tuple)."""
    if isinstance(data, TaskBatch):
        return data
    if isinstance(data, dict) and set(data) == set(TaskBatch._fields):
        return TaskBatch(**data)
    if isinstance(data, (tuple, list)):
        if len(data) == 1:
            return as_task_batch(data[0], name)
        if len(data) == 4:
            return TaskBatch(*data)
    raise TypeError(
        "Expected `" + name + "` to be a TaskBatch (support_x, support_y, query_x, query_y) "
        f"with a leading meta-batch axis. Received: {name} of type {type(data).__name__}"
        + (f" with {len(data)} elements" if isinstance(data, (tuple, list, dict)) else "")
    )


def _shape(value):
    return tuple(value.shape)


def check_task_shapes(batch, name="tasks"):
    """Validates the shapes of a TaskBatch of arrays/tensors (static shapes only)."""
    shapes = {field: _shape(value) for field, value in zip(TaskBatch._fields, batch)}
    for field, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(
                f"Expected `{name}.{field}` to have a leading meta-batch axis and a "
                f"per-task example axis (rank >= 2). Received: {name}.{field}.shape={shape}"
            )
    tasks = {shapes[f][0] for f in TaskBatch._fields}
    if len(tasks) != 1:
        raise ValueError(
            f"Expected every field of `{name}` to have the same meta-batch size. Received: "
            + ", ".join(f"{f}.shape={s}" for f, s in shapes.items())
        )
    if 0 in tasks:
        raise ValueError(f"Expected a non-empty meta-batch. Received: {name} with 0 tasks")
    for x_field, y_field in (("support_x", "support_y"), ("query_x", "query_y")):
        if shapes[x_field][1] != shapes[y_field][1]:
            raise ValueError(
                f"Expected `{name}.{x_field}` and `{name}.{y_field}` to have the same number "
                f"of examples per task. Received: {x_field}.shape={shapes[x_field]}, "
                f"{y_field}.shape={shapes[y_field]}"
            )
        if 0 in shapes[x_field][1:2]:
            raise ValueError(
                f"Expected at least one example per task in `{name}.{x_field}`. "
                f"Received: {x_field}.shape={shapes[x_field]}"
            )
    if shapes["support_x"][2:] != shapes["query_x"][2:] or (
        shapes["support_y"][2:] != shapes["query_y"][2:]
    ):
        raise ValueError(
            f"Expected support and query examples of `{name}` to have the same shape. "
            "Received: " + ", ".join(f"{f}.shape={s}" for f, s in shapes.items())
        )
    return batch


def _loss_function(loss):
    fn = keras.losses.get(loss)
    if fn is None:
        raise ValueError(f"Expected `loss` to name a Keras loss. Received: loss={loss!r}")
    return fn


def _assign_everywhere(variable, value, average=True):
    """`variable.assign(value)`, also from a replica context of a distribution strategy.

    Under several replicas the value is first averaged across them (unless it is known
    to be identical everywhere), then written to every copy of the variable.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        variable.assign(value)
        return
    if average and value.dtype.is_floating:
        value = context.all_reduce(tf.distribute.ReduceOp.MEAN, value)

    def update(strategy, target, new_value):
        strategy.extended.update(target, lambda v, x: v.assign(x), args=(new_value,),
                                 group=False)

    context.merge_call(update, args=(variable.value, value))


def _steps_done_in_interrupted_epoch(callbacks):
    """Batches of the epoch that a BackupAndRestore backup was taken in.

    Keras's BackupAndRestore restores the weights and the epoch, and restarts that
    epoch from batch 0; with `save_freq=N` its metadata records the last batch seen.
    """
    for callback in callbacks or []:
        if not isinstance(callback, keras.callbacks.BackupAndRestore):
            continue
        path = callback._training_metadata_path
        if callback.save_freq == "epoch" or not os.path.exists(path):
            return 0
        with open(path) as f:
            return int(json.load(f).get("batch", -1)) + 1
    return 0


def _without_autotune(dataset):
    """`dataset` with tf.data autotuning off, for the learner's own in-memory pipelines.

    They have nothing to tune, and the autotune thread sleeps in doubling periods (10 ms,
    20 ms, ...): deleting the iterator at the end of `fit` could wait for its next wake-up,
    seconds after the last step (measured: 5.1 s instead of 3.1 s for a 4-step fit).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def summarize(per_task):
    """Means over tasks and 95% confidence half-widths, `1.96 * std / sqrt(n)`."""
    out = {}
    for name, values in per_task.items():
        values = np.asarray(values, dtype=np.float64)
        out[name] = float(values.mean())
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        out[name + "_ci95"] = float(1.96 * spread / np.sqrt(len(values)))
    return out


def _serialize_loss(loss):
    if loss is None or isinstance(loss, str):
        return loss
    return keras.losses.serialize(loss)


def _metric_objects(names, example_targets):
    metrics = []
    for name in names:
        if name in ("accuracy", "acc"):
            if example_targets is not None and tf.as_dtype(example_targets.dtype).is_integer:
                metrics.append(keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
            else:
                metrics.append(keras.metrics.CategoricalAccuracy(name="accuracy"))
        else:
            metrics.append(keras.metrics.get(name))
    return metrics


class MetaLearner(keras.Model):
    """Base class of the supervised meta-learners (MAML, FOMAML, Meta-SGD, ANIL, Reptile).

    Subclasses choose the inner update rule (`_update_rule`), which model weights the
    inner loop adapts (`_adapted_mask`), extra meta-learned variables, and how a task's
    contribution to the meta-gradient is formed.

    Args:
        model: A built Keras 3 model; its weights are the meta-weights.
        inner_lr: Inner-loop step size `alpha` (> 0).
        inner_steps: Inner-loop steps per task during meta-training (>= 1).
        first_order: If True, drop second-order terms of the meta-gradient.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: If `model` is not a Keras 3 model or a hyper-parameter has the wrong type.
        ValueError: If `model` is unbuilt, or `inner_lr`/`inner_steps` is not positive.
        RuntimeError: If Keras does not run on the TensorFlow backend.
    """

    differentiates_inner_loop = True

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=False, **kwargs):
        check_tensorflow_backend()
        _check_model(model)
        inner_lr = check_learning_rate(inner_lr)
        inner_steps = check_steps(inner_steps)
        if not isinstance(first_order, (bool, np.bool_)):
            raise TypeError(
                f"Expected `first_order` to be a bool. Received: first_order={first_order!r}"
            )
        super().__init__(**kwargs)
        self.model = model
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = bool(first_order)
        self.task_step = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="task_step"
        )
        self._create_meta_variables()
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._query_metrics = []
        self._loss_spec = None
        self._metric_spec = None
        self._loss_fn = None
        self._train_source = None
        self._train_sampling = None
        self._steps_to_skip = 0
        self._functions = {}
        self.jit = False
        self.vectorize = False
        self.built = True

    # ----- hooks for subclasses -------------------------------------------------------

    def _create_meta_variables(self):
        """Creates meta-learned variables beyond the model's own (none by default)."""

    def _extra_meta_variables(self):
        return []

    def _adapted_mask(self):
        """Which of `model.trainable_variables` the inner loop adapts."""
        return [True] * len(self.model.trainable_variables)

    def _update_rule(self, meta_values, inner_lr):
        """The inner update rule given the meta-values (model weights + extras)."""
        del meta_values
        return inner.sgd(inner_lr)

    # ----- configuration --------------------------------------------------------------

    @property
    def metrics(self):
        return [self._loss_tracker, *self._query_metrics]

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def meta_variables(self):
        """The variables the outer loop updates: the model's weights, then the extras."""
        return list(self.model.trainable_variables) + self._extra_meta_variables()

    def compile(
        self,
        optimizer=None,
        loss=None,
        metrics=None,
        steps_per_execution=1,
        run_eagerly=False,
        jit_compile="auto",
        vectorize="auto",
    ):
        """Configures meta-training.

        Args:
            optimizer: The outer (meta) optimizer. Defaults to `keras.optimizers.Adam(1e-3)`.
            loss: Loss on support and query sets. Defaults to the task family's `loss`.
            metrics: Query-set metrics (e.g. `["accuracy"]`). Defaults to the family's.
            steps_per_execution: Meta-steps per compiled call (1 under a multi-replica
                strategy).
            run_eagerly: Run every meta-step eagerly (debugging; slow).
            jit_compile: Compile the meta-step with XLA. `"auto"`: for models without
                convolutions, and on GPUs for every model.
            vectorize: Vectorise over the tasks of a meta-batch with `tf.vectorized_map`
                instead of looping; combines with `jit_compile`. `"auto"`: for models
                without convolutions.
        """
        check_positive_int(steps_per_execution, "steps_per_execution")
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas > 1 and steps_per_execution > 1:
            # Keras 3's multi-step loop fails under MirroredStrategy ("You must feed a value
            # for placeholder tensor"), plain Keras models included: keras-team/keras#19246.
            raise ValueError(
                f"Expected steps_per_execution=1 under a distribution strategy with {replicas} "
                "replicas (Keras 3 cannot run several steps per execution there). Received: "
                f"steps_per_execution={steps_per_execution}"
            )
        _check_choice(jit_compile, "jit_compile")
        _check_choice(vectorize, "vectorize")
        optimizer = keras.optimizers.Adam(1e-3) if optimizer is None else optimizer
        if loss is not None:
            _loss_function(loss)
        super().compile(
            optimizer=optimizer,
            steps_per_execution=steps_per_execution,
            run_eagerly=run_eagerly,
            jit_compile=False,
        )
        self._loss_spec = loss
        self._metric_spec = None if metrics is None else list(metrics)
        self._jit_request = jit_compile
        self._vectorize_request = vectorize
        self._functions = {}
        self._meta_compile_config = {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "loss": _serialize_loss(loss),
            "metrics": self._metric_spec,
            "steps_per_execution": steps_per_execution,
            "run_eagerly": run_eagerly,
            "jit_compile": jit_compile,
            "vectorize": vectorize,
        }

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_meta_compile_config"):
            return dict(self._meta_compile_config)
        return {}

    def compile_from_config(self, config):
        config = dict(config)
        config["optimizer"] = keras.optimizers.deserialize(config["optimizer"])
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        self.compile(**config)
        self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "first_order": self.first_order,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)

    # ----- execution-mode choice ------------------------------------------------------

    def _has_convolutions(self):
        return any("conv" in type(layer).__name__.lower()
                   for layer in self.model._flatten_layers(include_self=False))

    def _resolve_execution(self):
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        jit, vectorize = self._jit_request, self._vectorize_request
        # Measured in benchmarks/meta_step.py: on CPU, XLA over task-vectorized steps is
        # the fastest for dense models, while convolutions are fastest in the plain task
        # loop without XLA (vectorized convolutions are slower and far larger in memory,
        # and XLA:CPU convolutions are an order of magnitude slower than oneDNN's). GPUs
        # get XLA, vectorized over tasks for dense models as JAX would (not measured on a
        # GPU here).
        if jit == "auto":
            jit = on_gpu or not self._has_convolutions()
        if vectorize == "auto":
            vectorize = not self._has_convolutions()
        self.jit, self.vectorize = bool(jit), bool(vectorize)

    # ----- losses and metrics ---------------------------------------------------------

    def _resolve_loss_and_metrics(self, source, example_batch):
        loss = self._loss_spec
        if loss is None:
            loss = getattr(source, "loss", None)
        if loss is None:
            raise ValueError(
                "Expected a loss: pass `compile(loss=...)` or train on a TaskDistribution "
                "whose `loss` attribute is set. Received: loss=None and tasks of type "
                f"{type(source).__name__}"
            )
        self._loss_fn = _loss_function(loss)
        # Saved with the compile config, so a reloaded learner keeps the family's loss.
        self._meta_compile_config["loss"] = _serialize_loss(loss)
        names = self._metric_spec
        if names is None:
            names = list(getattr(source, "metrics", ()) or ())
        self._meta_compile_config["metrics"] = list(names)
        current = [m.name for m in self._query_metrics]
        wanted = ["accuracy" if n in ("acc", "accuracy") else str(n) for n in names]
        if current != wanted:
            self._query_metrics = _metric_objects(
                names, None if example_batch is None else example_batch.query_y)
            self._functions = {}

    def _loss(self, y_true, y_pred):
        return tf.reduce_mean(self._loss_fn(y_true, y_pred))

    # ----- the inner loop -------------------------------------------------------------

    def _split_model_values(self, meta_values):
        n = len(self.model.trainable_variables)
        return list(meta_values[:n])

    def _adapt_task(self, meta_values, non_trainables, support_x, support_y, steps,
                    inner_lr, first_order, on_step=None):
        """Fast weights of the model after `steps` inner updates on one task's support set."""
        model_values = self._split_model_values(meta_values)
        mask = self._adapted_mask()
        update = self._update_rule(meta_values, inner_lr)
        fixed = [None if m else v for v, m in zip(model_values, mask)]

        def merge(adapted):
            it = iter(adapted)
            return [next(it) if f is None else f for f in fixed]

        def support_loss(adapted):
            y, _ = forward(self.model, merge(adapted), non_trainables, support_x, training=True)
            return self._loss(support_y, y)

        adapted = [v for v, m in zip(model_values, mask) if m]
        if on_step is not None:
            on_step(0, merge(adapted))
        for step in range(steps):
            _, grads = inner.gradients(support_loss, adapted, first_order)
            adapted = update(step, adapted, grads)
            if on_step is not None:
                on_step(step + 1, merge(adapted))
        return merge(adapted)

    def _task_outputs(self, meta_values, non_trainables, task):
        """Query loss, predictions, new non-trainables and outer direction of one task."""
        support_x, support_y, query_x, query_y = task
        fast = self._adapt_task(meta_values, non_trainables, support_x, support_y,
                                self.inner_steps, self.inner_lr, self.first_order)
        prediction, new_non_trainables = forward(
            self.model, fast, non_trainables, query_x, training=True
        )
        return self._loss(query_y, prediction), prediction, new_non_trainables, None

    # ----- the meta-gradient ----------------------------------------------------------

    def _meta_gradients(self, batch):
        """Mean meta-gradient over the tasks of `batch` and what the metrics need."""
        with exact_batch_statistics():
            if self.vectorize:
                return self._meta_gradients_vectorized(batch)
            return self._meta_gradients_loop(batch)

    def _meta_gradients_vectorized(self, batch):
        variables = self.meta_variables()
        non_trainables = variable_values(self.model.non_trainable_variables)
        with tf.GradientTape() as tape:
            meta_values = variable_values(variables)
            losses, predictions, new_nts, directions = map_tasks(
                lambda task: self._task_outputs(meta_values, non_trainables, task),
                tuple(batch),
            )
            loss = tf.reduce_mean(losses)
        if self.differentiates_inner_loop:
            grads = tape.gradient(loss, variables,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        else:
            grads = [tf.reduce_mean(d, axis=0) for d in directions]
        new_nts = [self._mean_over_tasks(v, old) for v, old in zip(new_nts, non_trainables)]
        return grads, loss, predictions, new_nts

    @staticmethod
    def _mean_over_tasks(stacked, old):
        if stacked.dtype.is_floating:
            return tf.reduce_mean(stacked, axis=0)
        return old

    def _meta_gradients_loop(self, batch):
        variables = self.meta_variables()
        non_trainables = variable_values(self.model.non_trainable_variables)
        num_tasks = tf.shape(batch.support_x)[0]

        def task_step(i):
            task = tuple(b[i] for b in batch)
            with tf.GradientTape() as tape:
                meta_values = variable_values(variables)
                loss, prediction, new_nt, direction = self._task_outputs(
                    meta_values, non_trainables, task
                )
            if self.differentiates_inner_loop:
                grads = tape.gradient(loss, variables,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            else:
                grads = direction
            return loss, prediction, new_nt, grads

        def body(i, grad_sum, loss_sum, nt_sum, predictions):
            loss, prediction, new_nt, grads = task_step(i)
            return (
                i + 1,
                # add_n, not `+`: grappler's remapper fuses MatMul + Add into
                # _FusedMatMul and rejects the 2-D "bias" of a kernel gradient.
                [tf.math.add_n([a, g]) for a, g in zip(grad_sum, grads)],
                loss_sum + loss,
                [a + tf.cast(n, a.dtype) if a.dtype.is_floating else a
                 for a, n in zip(nt_sum, new_nt)],
                predictions.write(i, prediction),
            )

        zeros = [tf.zeros_like(v) for v in variables]
        nt_zeros = [tf.zeros_like(v) if v.dtype.is_floating else v for v in non_trainables]
        outputs = getattr(self.model, "outputs", None)
        prediction_dtype = outputs[0].dtype if outputs else self.model.compute_dtype
        predictions = tf.TensorArray(prediction_dtype, size=num_tasks)
        _, grad_sum, loss_sum, nt_sum, predictions = tf.while_loop(
            lambda i, *_: i < num_tasks,
            body,
            (tf.constant(0), zeros, tf.zeros((), self._loss_dtype()), nt_zeros, predictions),
        )
        count = tf.cast(num_tasks, self._loss_dtype())
        grads = [g / tf.cast(count, g.dtype) for g in grad_sum]
        new_nts = [s / tf.cast(count, s.dtype) if s.dtype.is_floating else s for s in nt_sum]
        return grads, loss_sum / count, predictions.stack(), new_nts

    def _loss_dtype(self):
        return self.model.trainable_variables[0].dtype

    def _compiled(self, key, fn, jit):
        """`fn` as a tf.function (XLA when `jit`), cached per key and mode."""
        cache_key = (key, jit, self.vectorize)
        if cache_key not in self._functions:
            self._functions[cache_key] = tf.function(fn, jit_compile=jit, reduce_retracing=True)
        return self._functions[cache_key]

    def _meta_gradient_fn(self):
        if self.run_eagerly:
            return self._meta_gradients
        return self._compiled("meta_gradients", self._meta_gradients, self.jit)

    # ----- Keras train/test steps -----------------------------------------------------

    def _samples_in_graph(self):
        return isinstance(self._train_source, TaskDistribution)

    def _batch_from_data(self, data):
        # A TaskBatch comes from a dataset or from the chunked sampling of
        # _sampled_steps_function; anything else (Keras's placeholder element) stands
        # for one meta-batch drawn here.
        if self._samples_in_graph() and not isinstance(data, TaskBatch):
            return self._sample_in_graph()
        return TaskBatch(*(tf.convert_to_tensor(t) for t in as_task_batch(data)))

    def _sample_steps(self, count):
        """The meta-batches of steps `task_step .. task_step + count - 1`, stacked.

        Each is `tasks.sample(meta_batch_size, step_seed(seed, step))`, so the sequence
        does not depend on how steps are grouped into calls.
        """
        source, meta_batch_size, seed, spec = self._train_source_args

        def sample(first, count):
            batches = [source.sample(meta_batch_size, step_seed(seed, int(first) + k))
                       for k in range(int(count))]
            return tuple(np.stack([np.asarray(batch[j], dtype=s.dtype.as_numpy_dtype)
                                   for batch in batches])
                         for j, s in enumerate(spec))

        values = tf.numpy_function(sample, [self.task_step.value, tf.cast(count, tf.int64)],
                                   [s.dtype for s in spec], stateful=True)
        for value, s in zip(values, spec):
            value.set_shape(tf.TensorShape([None]).concatenate(s.shape))
        return TaskBatch(*values)

    def _sample_in_graph(self):
        meta_batch_size = self._train_source_args[1]
        values = [v[0] for v in self._sample_steps(1)]
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas == 1:
            return TaskBatch(*values)
        # Every replica draws the same meta-batch and takes its own contiguous share.
        share = meta_batch_size // replicas
        start = tf.distribute.get_replica_context().replica_id_in_sync_group * share
        return TaskBatch(*(v[start:start + share] for v in values))

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force)
        run_steps = self.train_function
        if (self._samples_in_graph() and not self.run_eagerly
                and self.distribute_strategy.num_replicas_in_sync == 1):
            run_steps = self._sampled_steps_function()

        def train_function(iterator):
            # Keras restarts an interrupted epoch from its first batch; the steps the
            # restored state already contains are passed over, so a resumed run takes
            # exactly the steps (and tasks) of an uninterrupted one.
            if self._steps_to_skip > 0:
                self._steps_to_skip -= self.steps_per_execution
                return {m.name: m.result() for m in self.metrics}
            return run_steps(iterator)

        self.train_function = train_function
        return train_function

    def _sampled_steps_function(self):
        """`steps_per_execution` meta-steps on in-graph sampled tasks, in one call.

        Keras's multi-step loop would reach the NumPy sampler once per step through
        `tf.numpy_function`, a fixed cost of a few tenths of a millisecond on CPU against
        a compiled update of about one millisecond for the 1-step sinusoid MLP. Here one
        call draws a chunk of meta-batches (at most `_SAMPLE_CHUNK_BYTES` of them), the
        steps index into it, and the loop skips Keras's placeholder iterator
        (benchmarks/RESULTS.md: 1.2x more meta-steps/s on the sinusoid MLP).
        """
        spec = self._train_source_args[3]
        batch_bytes = sum(s.shape.num_elements() * s.dtype.size for s in spec)
        steps = self.steps_per_execution
        chunk = max(1, min(steps, _SAMPLE_CHUNK_BYTES // max(1, batch_bytes)))

        @tf.function
        def run_steps(unused_iterator):
            for start in tf.range(0, steps, chunk):
                count = tf.minimum(chunk, steps - start)
                batches = self._sample_steps(count)
                for i in tf.range(count):
                    batch = TaskBatch(*(v[i] for v in batches))
                    self.distribute_strategy.run(self.train_step, args=(batch,))
            return {m.name: m.result() for m in self.metrics}

        return run_steps

    def train_step(self, data):
        batch = self._batch_from_data(data)
        return self._meta_update_fn()(batch)

    def _meta_update(self, batch):
        grads, loss, predictions, new_nts = self._meta_gradient_fn()(batch)
        self._apply_if_finite(loss, grads, new_nts)
        _assign_everywhere(self.task_step, self.task_step + 1, average=False)
        return self._update_metrics(loss, batch.query_y, predictions)

    def _meta_update_fn(self):
        # Under XLA the outer update and the metrics join the meta-gradient in one
        # compiled call instead of running op by op around it (1.1-1.7x more meta-steps/s
        # for the 1-step sinusoid MLP on CPU, benchmarks/RESULTS.md). Task sampling (a
        # NumPy function) stays outside, and so does the update under several replicas
        # (cross-replica updates do not compile).
        single_replica = self.distribute_strategy.num_replicas_in_sync == 1
        if self.run_eagerly or not self.jit or not single_replica:
            return self._meta_update
        return self._compiled("meta_update", self._meta_update, True)

    def _apply_if_finite(self, loss, grads, new_non_trainables):
        """Applies a meta-update only when it is finite.

        A diverging inner loop shows up as a NaN/Inf loss in the logs while the
        meta-weights keep their last finite values, so `TerminateOnNaN` stops a run whose
        checkpoints stay usable. Under a multi-replica strategy the update is applied
        unconditionally (a conditional cross-replica update is not expressible in a
        replica context).
        """
        variables = self.meta_variables()
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        if replicas > 1:
            # The optimizer sums gradients over replicas; each holds a mean over its share.
            grads = [g / replicas for g in grads]

        def apply():
            self.optimizer.apply_gradients(zip(grads, variables))
            for variable, value in zip(self.model.non_trainable_variables, new_non_trainables):
                _assign_everywhere(variable, value)

        if replicas > 1:
            apply()
            return
        finite = tf.reduce_all([tf.math.is_finite(loss)]
                               + [tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        if tf.executing_eagerly():
            if finite:
                apply()
        else:
            tf.cond(finite, lambda: (apply(), tf.constant(True))[1], lambda: tf.constant(False))

    def _update_metrics(self, loss, query_y, predictions):
        self._loss_tracker.update_state(loss)
        flat_y = tf.reshape(query_y, tf.concat([[-1], tf.shape(query_y)[2:]], 0))
        flat_p = tf.reshape(predictions, tf.concat([[-1], tf.shape(predictions)[2:]], 0))
        for metric in self._query_metrics:
            metric.update_state(flat_y, flat_p)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        batch = TaskBatch(*(tf.convert_to_tensor(t) for t in as_task_batch(data)))
        fn = self._curve_fn((self.inner_steps,))
        losses, predictions = fn(batch, tf.constant(self.inner_lr, self._loss_dtype()))
        return self._update_metrics(tf.reduce_mean(losses[:, 0]), batch.query_y, predictions[0])

    # ----- adaptation curves (evaluation) ---------------------------------------------

    def _curve(self, batch, inner_lr, steps):
        """Per-task query losses `[tasks, steps]` and predictions `[steps, tasks, ...]`."""
        non_trainables = variable_values(self.model.non_trainable_variables)
        meta_values = variable_values(self.meta_variables())
        wanted = set(steps)

        def task_curve(task):
            support_x, support_y, query_x, query_y = task
            recorded = {}

            def record(step, fast):
                if step in wanted:
                    recorded[step] = forward(self.model, fast, non_trainables, query_x,
                                             training=True)[0]

            self._adapt_task(meta_values, non_trainables, support_x, support_y, max(steps),
                             inner_lr, True, on_step=record)
            predictions = tf.stack([recorded[s] for s in steps])
            losses = tf.stack([self._loss(query_y, recorded[s]) for s in steps])
            return losses, predictions

        with exact_batch_statistics():
            losses, predictions = tf.map_fn(
                task_curve, tuple(batch),
                fn_output_signature=(tf.TensorSpec(None, self._loss_dtype()),
                                     tf.TensorSpec(None, self._loss_dtype())),
            ) if not self.vectorize else map_tasks(task_curve, tuple(batch))
        # [tasks, steps, ...] -> [steps, tasks, ...]
        perm = [1, 0] + list(range(2, len(predictions.shape)))
        return losses, tf.transpose(predictions, perm)

    def _curve_fn(self, steps):
        steps = tuple(steps)

        def fn(batch, inner_lr):
            return self._curve(batch, inner_lr, steps)

        if self.run_eagerly:
            return fn
        return self._compiled(("curve", steps), fn, False)

    # ----- data plumbing --------------------------------------------------------------

    def _validation_dataset(self, tasks, meta_batch_size, batches, seed):
        batch_list = [tasks.sample(meta_batch_size, step_seed(seed, b)) for b in range(batches)]
        stacked = TaskBatch(*(np.stack(f) for f in zip(*batch_list)))
        return _without_autotune(tf.data.Dataset.from_tensor_slices(stacked))

    @staticmethod
    def _pool_dataset(pool, meta_batch_size, seed):
        num_tasks = _shape(pool.support_x)[0]
        if meta_batch_size > num_tasks:
            raise ValueError(
                f"Expected `meta_batch_size` <= the number of tasks in the TaskBatch "
                f"({num_tasks}). Received: meta_batch_size={meta_batch_size}"
            )
        return _without_autotune(
            tf.data.Dataset.from_tensor_slices(pool)
            .shuffle(num_tasks, seed=seed % 2**31, reshuffle_each_iteration=True)
            .batch(meta_batch_size, drop_remainder=True)
            .repeat()
        )

    def _prepare_source(self, tasks, meta_batch_size, seed):
        """Validates `tasks` and returns (keras_x, example TaskBatch of arrays)."""
        if isinstance(tasks, TaskDistribution):
            example = as_task_batch(tasks.sample(meta_batch_size, step_seed(seed, 0)),
                                    "tasks.sample(...)")
            check_task_shapes(example, "tasks.sample(...)")
            example = TaskBatch(*(np.asarray(v) for v in example))
            spec = tuple(tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for v in example)
            self._train_source_args = (tasks, meta_batch_size, seed, spec)
            # One placeholder element per replica: the tasks are sampled in the graph.
            replicas = self.distribute_strategy.num_replicas_in_sync
            if meta_batch_size % replicas:
                raise ValueError(
                    f"Expected `meta_batch_size` to be divisible by the {replicas} replicas "
                    f"of the distribution strategy. Received: meta_batch_size={meta_batch_size}"
                )
            dummy = tf.data.Dataset.from_tensors(tf.zeros((replicas,), tf.int8)).repeat()
            return _without_autotune(dummy), example
        if isinstance(tasks, tf.data.Dataset):
            spec = tasks.element_spec
            try:
                example = as_task_batch(spec, "tasks.element_spec")
            except TypeError:
                raise TypeError(
                    "Expected `tasks` to be a tf.data.Dataset of TaskBatch elements "
                    "(support_x, support_y, query_x, query_y). Received: a dataset with "
                    f"element_spec={spec}"
                ) from None
            check_task_shapes(example, "tasks")
            return tasks, example
        if isinstance(tasks, (TaskBatch, tuple, list, dict)):
            pool = as_task_batch(tasks)
            pool = TaskBatch(*(np.asarray(v) for v in pool))
            check_task_shapes(pool)
            return self._pool_dataset(pool, meta_batch_size, seed), pool
        raise TypeError(
            "Expected `tasks` to be a TaskDistribution, a tf.data.Dataset of TaskBatch or a "
            f"TaskBatch of arrays. Received: tasks of type {type(tasks).__name__}"
        )

    def _check_against_model(self, example, name="tasks"):
        expected = tuple(self.model.inputs[0].shape[1:]) if getattr(self.model, "inputs", None) else None
        got = tuple(example.support_x.shape[2:])
        if expected is not None and len(expected) == len(got) and all(
            e is None or e == g for e, g in zip(expected, got)
        ):
            return
        if expected is not None:
            raise ValueError(
                f"Expected examples of `{name}` to match the model input shape {expected}. "
                f"Received: support_x.shape={tuple(example.support_x.shape)}"
            )

    # ----- public API -----------------------------------------------------------------

    def fit(self, tasks=None, meta_batch_size=25, epochs=1, steps_per_epoch=None,
            validation_tasks=None, validation_batches=None, callbacks=None, verbose="auto",
            seed=0, initial_epoch=0, validation_freq=1, **kwargs):
        """Meta-trains on `tasks`, Keras style.

        Task `t` of step `s` is drawn as `tasks.sample(meta_batch_size, step_seed(seed, s))`
        where `s` is the tracked `task_step` counter, so a run restored from a checkpoint
        continues the same task sequence.

        Args:
            tasks: A `TaskDistribution`, a `tf.data.Dataset` of `TaskBatch`, or a
                `TaskBatch` of arrays (a pool of tasks shuffled into meta-batches).
            meta_batch_size: Tasks per meta-step (for distributions and pools).
            epochs: Number of epochs.
            steps_per_epoch: Meta-steps per epoch (required for infinite sources).
            validation_tasks: Optional held-out tasks: a `TaskDistribution` (sampled once,
                `validation_batches` meta-batches) or a dataset of `TaskBatch`.
            validation_batches: Validation meta-batches per epoch.
            callbacks: Keras callbacks.
            verbose: Keras verbosity.
            seed: Run seed of the task sequence.
            initial_epoch: Epoch to start from.
            validation_freq: Validate every this many epochs.
            **kwargs: Other `keras.Model.fit` arguments.

        Returns:
            A `keras.callbacks.History`.

        Raises:
            ValueError, TypeError: On malformed tasks, before any state changes.
        """
        self._assert_compile_called("fit")
        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        check_positive_int(epochs, "epochs")
        seed = check_seed(seed)
        if steps_per_epoch is not None:
            check_positive_int(steps_per_epoch, "steps_per_epoch")
        if steps_per_epoch is None and not isinstance(tasks, (TaskBatch, tuple, list, dict)):
            if isinstance(tasks, TaskDistribution):
                raise ValueError(
                    "Expected `steps_per_epoch` for a TaskDistribution (an endless source). "
                    "Received: steps_per_epoch=None"
                )
        x, example = self._prepare_source(tasks, meta_batch_size, seed)
        self._check_against_model(example)
        if steps_per_epoch is None and isinstance(tasks, (TaskBatch, tuple, list, dict)):
            steps_per_epoch = max(1, _shape(example.support_x)[0] // meta_batch_size)
        validation_data = None
        if validation_tasks is not None:
            validation_data = self._validation_source(validation_tasks, meta_batch_size,
                                                      validation_batches, seed)
        self._resolve_loss_and_metrics(tasks, example)
        self._resolve_execution()
        # The train function samples with the meta-batch size and seed it was traced with.
        sampling = (meta_batch_size, seed)
        if self._train_source is not tasks or self._train_sampling != sampling:
            self.train_function = None
            self._train_source = tasks
            self._train_sampling = sampling
        self.test_function = None
        if not self.optimizer.built:
            # The order Keras uses when it restores optimizer state (BackupAndRestore,
            # load_weights): slot variables are matched by position. Slots of a learner
            # built under a distribution strategy must be created in its scope.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        self._steps_to_skip = _steps_done_in_interrupted_epoch(callbacks)
        return super().fit(
            x, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
            validation_data=validation_data, verbose=verbose, initial_epoch=initial_epoch,
            validation_freq=validation_freq, shuffle=False, **kwargs,
        )

    def _validation_source(self, tasks, meta_batch_size, batches, seed):
        if isinstance(tasks, TaskDistribution):
            batches = _DEFAULT_VALIDATION_BATCHES if batches is None else check_positive_int(
                batches, "validation_batches")
            example = tasks.sample(1, 0)
            check_task_shapes(as_task_batch(example, "validation_tasks.sample(...)"),
                              "validation_tasks")
            return self._validation_dataset(tasks, meta_batch_size, batches, seed ^ 0x5A5A)
        if isinstance(tasks, tf.data.Dataset):
            check_task_shapes(as_task_batch(tasks.element_spec, "validation_tasks"),
                              "validation_tasks")
            return tasks
        pool = TaskBatch(*(np.asarray(v) for v in as_task_batch(tasks, "validation_tasks")))
        check_task_shapes(pool, "validation_tasks")
        return tf.data.Dataset.from_tensors(pool)

    def evaluate(self, x=None, y=None, *args, steps=None, meta_batch_size=25,
                 num_batches=10, seed=0, inner_lr=None, **kwargs):
        """Query loss and metrics after adaptation.

        With `steps` a list of inner-step counts (e.g. `[0, 1, 5, 10]`), adapts to
        `num_batches * meta_batch_size` held-out tasks from `x` and returns
        `{step: {"loss": ..., metric: ...}}`. Otherwise behaves like `keras.Model.evaluate`
        on a dataset of TaskBatch (adapting with `inner_steps`), which is what `fit` uses
        for validation.

        Args:
            x: A `TaskDistribution`, a dataset of `TaskBatch` or a `TaskBatch`.
            steps: A list of inner-step counts, or Keras's number of batches.
            meta_batch_size: Tasks per evaluated batch (for distributions).
            num_batches: Batches to evaluate (for distributions).
            seed: Seed of the evaluated tasks.
            inner_lr: Evaluation step size; defaults to the training `inner_lr`.

        Returns:
            A dict keyed by step count, or what `keras.Model.evaluate` returns.
        """
        if not isinstance(steps, (list, tuple)):
            if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
                raise TypeError(
                    "Expected `steps` to be a list of inner-step counts (e.g. [0, 1, 5]) or "
                    f"Keras's int number of batches. Received: steps={steps!r}"
                )
            if isinstance(x, TaskDistribution):
                example = as_task_batch(x.sample(1, 0), "x.sample(...)")
                check_task_shapes(example, "x")
                self._resolve_loss_and_metrics(x, example)
                self._resolve_execution()
                self.test_function = None
                x = self._validation_dataset(
                    x, check_positive_int(meta_batch_size, "meta_batch_size"),
                    check_positive_int(num_batches, "num_batches"), check_seed(seed))
            return super().evaluate(x, y, *args, steps=steps, **kwargs)
        return self.evaluate_adaptation(x, steps, meta_batch_size=meta_batch_size,
                                        num_batches=num_batches, seed=seed, inner_lr=inner_lr)

    def evaluate_adaptation(self, tasks, steps=(0, 1, 5, 10), meta_batch_size=25,
                            num_batches=10, seed=0, inner_lr=None):
        """Mean query loss/metrics after each number of inner steps in `steps`.

        Args:
            tasks: A `TaskDistribution`, a dataset of `TaskBatch`, or a `TaskBatch`.
            steps: Inner-step counts to report (non-negative ints).
            meta_batch_size: Tasks per batch (distributions only).
            num_batches: Number of batches (distributions only).
            seed: Seed of the evaluated tasks.
            inner_lr: Evaluation step size (defaults to `inner_lr`).

        Returns:
            `{step: {"loss": mean, "loss_ci95": half-width, metric: ..., metric_ci95: ...}}`:
            means over tasks with the half-width of their normal 95% confidence interval.
        """
        steps = tuple(check_steps(s, "steps", allow_zero=True) for s in steps)
        if not steps:
            raise ValueError("Expected `steps` to list at least one step count. Received: steps=[]")
        inner_lr = self.inner_lr if inner_lr is None else check_learning_rate(inner_lr)
        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        num_batches = check_positive_int(num_batches, "num_batches")
        seed = check_seed(seed)
        if isinstance(tasks, TaskDistribution):
            batches = [as_task_batch(tasks.sample(meta_batch_size, step_seed(seed, b)))
                       for b in range(num_batches)]
        elif isinstance(tasks, tf.data.Dataset):
            batches = [as_task_batch(b) for b in tasks.take(num_batches)]
        else:
            batches = [as_task_batch(tasks)]
        for b in batches:
            check_task_shapes(b)
        self._check_against_model(batches[0])
        if self._loss_fn is None or isinstance(tasks, TaskDistribution):
            self._resolve_loss_and_metrics(tasks, batches[0])
        if not hasattr(self, "_jit_request"):
            raise RuntimeError("Call `compile()` before `evaluate`.")
        self._resolve_execution()
        fn = self._curve_fn(steps)
        per_task = {s: {"loss": []} for s in steps}
        for b in batches:
            b = TaskBatch(*(tf.convert_to_tensor(np.asarray(v)) for v in b))
            losses, predictions = fn(b, tf.constant(inner_lr, self._loss_dtype()))
            for k, s in enumerate(steps):
                per_task[s]["loss"].extend(losses[:, k].numpy().tolist())
                for metric in self._query_metrics:
                    values = per_task[s].setdefault(metric.name, [])
                    for y, p in zip(b.query_y, predictions[k]):
                        metric.reset_state()
                        metric.update_state(y, p)
                        values.append(float(metric.result()))
        return {s: summarize(values) for s, values in per_task.items()}

    def adapt(self, support_x, support_y, steps=None, inner_lr=None):
        """A new Keras model with weights adapted to one task; meta-weights untouched.

        Args:
            support_x: Support inputs of one task, `[shots, *input_shape]`.
            support_y: Support targets, `[shots, *target_shape]`.
            steps: Inner steps (defaults to `inner_steps`).
            inner_lr: Step size (defaults to `inner_lr`).

        Returns:
            A `keras.Model` with the architecture of `model` and the adapted weights.
        """
        steps = self.inner_steps if steps is None else check_steps(steps, "steps", allow_zero=True)
        inner_lr = self.inner_lr if inner_lr is None else check_learning_rate(inner_lr)
        support_x = np.asarray(support_x)
        support_y = np.asarray(support_y)
        if support_x.ndim < 1 or support_y.ndim < 1 or support_x.shape[0] != support_y.shape[0]:
            raise ValueError(
                "Expected `support_x` and `support_y` to hold the same number of examples "
                f"along axis 0. Received: support_x.shape={support_x.shape}, "
                f"support_y.shape={support_y.shape}"
            )
        if support_x.shape[0] == 0:
            raise ValueError("Expected at least one support example. Received: support_x.shape="
                             f"{support_x.shape}")
        batch = TaskBatch(support_x[None], support_y[None], support_x[None], support_y[None])
        self._check_against_model(batch, "support_x")
        if self._loss_fn is None:
            if self._loss_spec is None:
                raise ValueError("Expected a loss: call `compile(loss=...)` or `fit` first. "
                                 "Received: loss=None")
            self._loss_fn = _loss_function(self._loss_spec)
        fast = self._adapt_fn(steps)(
            tf.convert_to_tensor(support_x, self._input_dtype()),
            tf.convert_to_tensor(support_y),
            tf.constant(inner_lr, self._loss_dtype()),
        )
        adapted = keras.models.clone_model(self.model)
        adapted.set_weights([v.numpy() for v in self.model.weights])
        for variable, value in zip(adapted.trainable_variables, fast):
            variable.assign(value)
        return adapted

    def _input_dtype(self):
        inputs = getattr(self.model, "inputs", None)
        return inputs[0].dtype if inputs else self._loss_dtype()

    def _adapt_fn(self, steps):
        def fn(support_x, support_y, inner_lr):
            with exact_batch_statistics():
                return self._adapt_task(
                    variable_values(self.meta_variables()),
                    variable_values(self.model.non_trainable_variables),
                    support_x, support_y, steps, inner_lr, True,
                )

        return self._compiled(("adapt", steps), fn, False)
