"""`MetaTrainer`: the meta-learning loop, as Keras's `Trainer` is the loop of a `Model`.

A meta-learner is a `MetaTrainer` subclass wrapping an unmodified, built Keras 3 model.
The trainer owns everything around one task's computation: `compile`/`fit`/`evaluate`,
task sources, execution modes and their compiled functions, the outer optimizer update
with its non-finite guard, exact resume and distribution. The learner implements the
learner protocol, the only methods the trainer calls on it:

- `task_outputs(meta, task) -> TaskOutputs`: what one task contributes to a meta-step;
- `adapt_states(meta, support_x, support_y, steps, **options) -> [state, ...]` and
  `predict_adapted(meta, state, x)`: adaptation for `adapt()` and `evaluate(steps=...)`;
- `adapted_model(state) -> keras.Model`: what `adapt()` returns;
- optionally `extra_meta_variables()` (variables learned beside the model's weights, made
  with `add_weight` in the learner's `__init__`), `adapt_options(**options)` (extra
  keyword arguments of `adapt`/`evaluate`, such as a step size) and `default_adapt_steps`.

The trainer traces these methods without AutoGraph (it cost about half of a first `fit`):
control flow that depends on tensor values is written with `tf.cond` / `tf.while_loop`,
not Python `if` / `while`.
"""

import logging
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_meta._validation import (
    check_model,
    check_positive_int,
    check_seed,
    check_steps,
)
from keras_meta.evaluation.stats import summarize
from keras_meta.ops import (
    check_tensorflow_backend,
    exact_batch_statistics,
    map_tasks,
    random_state,
    variable_values,
)
from keras_meta.ops.finite import apply_if_finite
from keras_meta.tasks.base import TaskBatch, TaskDistribution
from keras_meta.training import distribute, execution, resume, sources


class MetaState(NamedTuple):
    """The values the learner protocol computes with, differentiable to the meta-variables.

    Attributes:
        params: Values of `model.trainable_variables` (the meta-weights).
        non_trainables: Values of `model.non_trainable_variables` (BatchNorm statistics,
            random-seed state).
        extras: Values of the learner's `extra_meta_variables()` (learned step sizes,
            optimizer networks).
    """

    params: list
    non_trainables: list
    extras: list


class TaskOutputs(NamedTuple):
    """What one task contributes to a meta-step.

    Attributes:
        loss: Scalar query loss; the trainer differentiates its task mean with respect to
            the meta-variables unless `meta_gradient` is given.
        predictions: Query predictions (for the metrics).
        state_updates: New values of `model.non_trainable_variables` (floating ones are
            averaged over tasks and assigned after the update).
        meta_gradient: Optional list, one tensor per meta-variable: the task's own outer
            direction (Reptile's `theta - phi`), used instead of differentiating `loss`.
    """

    loss: Any
    predictions: Any
    state_updates: list
    meta_gradient: Any = None


def _loss_function(loss):
    fn = keras.losses.get(loss)
    if fn is None:
        raise ValueError(f"Expected `loss` to name a Keras loss. Received: loss={loss!r}")
    return fn


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


class MetaTrainer(keras.Model):
    """Base class of the supervised meta-learners: the loop around the learner protocol.

    Subclasses implement the learner protocol (module docstring); `GradientLearner`
    implements it for the MAML family with the shared inner loop.

    Args:
        model: A built Keras 3 model; its weights are the meta-weights.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: If `model` is not a Keras 3 model.
        ValueError: If `model` is unbuilt.
        RuntimeError: If Keras does not run on the TensorFlow backend.
    """

    def __init__(self, model, **kwargs):
        check_tensorflow_backend()
        check_model(model)
        super().__init__(**kwargs)
        self.model = model
        self.task_step = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="task_step"
        )
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._query_metrics = []
        self._loss_spec = None
        self._metric_spec = None
        self._loss_fn = None
        self._train_source = None
        self._train_sampling = None
        self._sampler = None
        self._steps_to_skip = 0
        self._functions = execution.FunctionCache()
        self.jit = False
        self.vectorize = False
        # How `fit` runs its meta-steps and why, set by `fit` (execution.summary).
        self.execution_summary = None
        self.built = True

    # ----- the learner protocol ------------------------------------------------------

    def extra_meta_variables(self):
        """Variables the outer loop learns besides the model's weights (none by default)."""
        return []

    def task_outputs(self, meta, task):
        """What one task contributes to the meta-step.

        Args:
            meta: A `MetaState`.
            task: `(support_x, support_y, query_x, query_y)` of one task (no task axis).

        Returns:
            A `TaskOutputs`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement task_outputs(meta, task).")

    def adapt_states(self, meta, support_x, support_y, steps, **options):
        """The learner's state for one task after each number of steps in `steps`.

        Args:
            meta: A `MetaState`.
            support_x, support_y: One task's support set.
            steps: A tuple of non-negative step counts.
            **options: Validated `adapt_options`, as tensors.

        Returns:
            A list of states (any structure of tensors), one per entry of `steps`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement adapt_states(meta, support_x, support_y, steps).")

    def predict_adapted(self, meta, state, x):
        """Predictions for inputs `x` of the task that `state` was adapted to."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_adapted(meta, state, x).")

    def adapted_model(self, state):
        """A standalone `keras.Model` that predicts as `predict_adapted` does for `state`."""
        raise NotImplementedError(f"{type(self).__name__} must implement adapted_model(state).")

    def adapt_options(self, **options):
        """Validates extra keyword arguments of `adapt`/`evaluate` (none by default).

        Returns:
            A dict of Python numbers, passed on to `adapt_states` as tensors.
        """
        if options:
            raise TypeError(
                f"Expected no adaptation options for {type(self).__name__}. Received: "
                + ", ".join(f"{k}={v!r}" for k, v in options.items()))
        return {}

    @property
    def default_adapt_steps(self):
        """Adaptation steps of `adapt()` and of Keras-style `evaluate` when none are given."""
        return 0

    def evaluation_probe(self, options):
        """What `keras_meta.evaluation.evaluate` measures of this learner."""
        from keras_meta.evaluation.probes import SupervisedProbe

        return SupervisedProbe(self, options)

    # ----- configuration --------------------------------------------------------------

    @property
    def metrics(self):
        return [self._loss_tracker, *self._query_metrics]

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def meta_variables(self):
        """The variables the outer loop updates: the model's weights, then the extras."""
        return list(self.model.trainable_variables) + list(self.extra_meta_variables())

    def meta_state(self, variables=None):
        """The current `MetaState` (values of `variables`, the meta-variables by default)."""
        values = variable_values(self.meta_variables() if variables is None else variables)
        n = len(self.model.trainable_variables)
        return MetaState(values[:n], variable_values(self.model.non_trainable_variables),
                         values[n:])

    @property
    def seed_state_mask(self):
        """Which of `model.non_trainable_variables` are layers' random-seed states."""
        if getattr(self, "_seed_state_mask", None) is None:
            self._seed_state_mask = random_state.seed_state_mask(self.model)
        return self._seed_state_mask

    def _meta_for_task(self, meta, index):
        """`meta` with task `index`'s own random-seed states (fresh randomness per task)."""
        return meta._replace(non_trainables=random_state.for_task(
            meta.non_trainables, self.seed_state_mask, index))

    def _new_non_trainables(self, stacked, old):
        """A meta-step's non-trainables from every task's: floating ones (BatchNorm
        statistics) averaged, random-seed states as the first task advanced them (it started
        from the model's own), others unchanged."""
        return [v[0] if is_seed else execution.mean_over_tasks(v, o)
                for v, o, is_seed in zip(stacked, old, self.seed_state_mask)]

    def task_loss(self, y_true, y_pred):
        """The compiled loss, averaged over a task's examples."""
        return tf.reduce_mean(self._loss_fn(y_true, y_pred))

    def compile(self, optimizer=None, loss=None, metrics=None, steps_per_execution=1,
                run_eagerly=False, jit_compile="auto", vectorize="auto"):
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

        Raises:
            ValueError, TypeError: On a bad argument, before anything is configured.
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
        execution.resolve(jit_compile, vectorize, self.model)
        optimizer = keras.optimizers.Adam(1e-3) if optimizer is None else optimizer
        if loss is not None:
            _loss_function(loss)
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution,
                        run_eagerly=run_eagerly, jit_compile=False)
        self._loss_spec = loss
        self._metric_spec = None if metrics is None else list(metrics)
        self._jit_request = jit_compile
        self._vectorize_request = vectorize
        self._functions.clear()
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
        return {"name": self.name, "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)

    def _resolve_execution(self):
        if not hasattr(self, "_jit_request"):
            raise RuntimeError("Call `compile()` before `fit`, `evaluate` or `adapt`.")
        self.jit, self.vectorize = execution.resolve(self._jit_request, self._vectorize_request,
                                                     self.model)

    # Hook: whether vectorized execution takes each task's meta-gradient inside the
    # vectorized function (`GradientLearner` when its memory plan recomputes).
    _gradients_per_task = False

    def _plan_memory(self, example):
        """Hook: what a learner decides from the first training batch (its inner loop's
        memory plan, `GradientLearner`) once the execution mode is known."""
        del example

    def _compiled(self, key, fn, jit):
        return self._functions.get(key, fn, jit, self.vectorize)

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
            self._functions.clear()

    def _require_loss(self):
        if self._loss_fn is None:
            if self._loss_spec is None:
                raise ValueError("Expected a loss: call `compile(loss=...)` or `fit` first. "
                                 "Received: loss=None")
            self._loss_fn = _loss_function(self._loss_spec)

    def _loss_dtype(self):
        return self.model.trainable_variables[0].dtype

    def _input_dtype(self):
        inputs = getattr(self.model, "inputs", None)
        return inputs[0].dtype if inputs else self._loss_dtype()

    def _check_against_model(self, example, name="tasks"):
        inputs = getattr(self.model, "inputs", None)
        if not inputs:
            return
        expected = tuple(inputs[0].shape[1:])
        got = tuple(example.support_x.shape[2:])
        if len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got)):
            return
        raise ValueError(
            f"Expected examples of `{name}` to match the model input shape {expected}. "
            f"Received: support_x.shape={tuple(example.support_x.shape)}"
        )

    # ----- the meta-gradient ----------------------------------------------------------

    def _meta_gradients(self, batch):
        """Mean meta-gradient over the tasks of `batch` and what the metrics need."""
        with exact_batch_statistics(), execution.generic_recurrent_kernels(self.model):
            if self.vectorize:
                return self._meta_gradients_vectorized(batch)
            return self._meta_gradients_loop(batch)

    def _task_terms(self, meta, task, index):
        outputs = self.task_outputs(self._meta_for_task(meta, index), task)
        direction = [] if outputs.meta_gradient is None else list(outputs.meta_gradient)
        return outputs.loss, outputs.predictions, list(outputs.state_updates), direction

    def _task_gradients(self, variables, task, index):
        """One task's loss, predictions, new non-trainables and meta-gradient."""
        with tf.GradientTape() as tape:
            loss, prediction, new_nt, direction = self._task_terms(
                self.meta_state(variables), task, index)
        if direction:
            return loss, prediction, new_nt, direction
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, prediction, new_nt, grads

    def _meta_gradients_vectorized(self, batch):
        variables = self.meta_variables()
        indexed = (*batch, tf.range(tf.shape(batch.support_x)[0]))
        if self._gradients_per_task:
            # Each task's gradient is taken inside the vectorized function, so the
            # vectorizing rewrite sees (and batches) what the learner's custom gradients
            # build, e.g. recomputed inner steps; differentiating the vectorized forward
            # from outside would use the ops' registered gradients instead.
            losses, predictions, new_nts, grads = map_tasks(
                lambda task: self._task_gradients(variables, task[:4], task[4]), indexed)
            new_nts = self._new_non_trainables(
                new_nts, variable_values(self.model.non_trainable_variables))
            return ([tf.reduce_mean(g, axis=0) for g in grads], tf.reduce_mean(losses),
                    predictions, new_nts)
        with tf.GradientTape() as tape:
            meta = self.meta_state(variables)
            losses, predictions, new_nts, directions = map_tasks(
                lambda task: self._task_terms(meta, task[:4], task[4]), indexed)
            loss = tf.reduce_mean(losses)
        if directions:
            grads = [tf.reduce_mean(d, axis=0) for d in directions]
        else:
            grads = tape.gradient(loss, variables,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, loss, predictions, self._new_non_trainables(new_nts, meta.non_trainables)

    def _meta_gradients_loop(self, batch):
        variables = self.meta_variables()
        non_trainables = variable_values(self.model.non_trainable_variables)
        num_tasks = tf.shape(batch.support_x)[0]

        def body(i, grad_sum, loss_sum, nt_sum, predictions):
            loss, prediction, new_nt, grads = self._task_gradients(
                variables, tuple(b[i] for b in batch), i)
            return (
                i + 1,
                # add_n, not `+`: grappler's remapper fuses MatMul + Add into
                # _FusedMatMul and rejects the 2-D "bias" of a kernel gradient.
                [tf.math.add_n([a, g]) for a, g in zip(grad_sum, grads)],
                loss_sum + loss,
                [a + tf.cast(n, a.dtype) if a.dtype.is_floating
                 else tf.where(tf.equal(i, 0), n, a) if is_seed else a
                 for a, n, is_seed in zip(nt_sum, new_nt, self.seed_state_mask)],
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

    def _meta_gradient_fn(self):
        if self.run_eagerly:
            return self._meta_gradients
        return self._compiled("meta_gradients", self._meta_gradients, self.jit)

    # ----- Keras train/test steps -----------------------------------------------------

    def _batch_from_data(self, data):
        # A TaskBatch comes from a dataset or from the chunked sampling of
        # _sampled_steps_function; anything else (Keras's placeholder element) stands
        # for one meta-batch drawn here.
        if self._sampler is not None and not isinstance(data, TaskBatch):
            return self._sampler.sample_replica_share(self.task_step.value,
                                                      tf.distribute.get_replica_context())
        return sources.as_tensors(data)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force)
        run_steps = self.train_function
        replicas = self.distribute_strategy.num_replicas_in_sync
        if self._sampler is not None and not self.run_eagerly and replicas == 1:
            run_steps = self._sampled_steps_function()
        elif replicas > 1 and not self.run_eagerly:
            run_steps = self._replicated_step_function(self.train_step)

        def train_function(iterator):
            # Keras restarts an interrupted epoch from its first batch; the steps the
            # restored state already contains are passed over, so a resumed run takes
            # exactly the steps (and tasks) of an uninterrupted one.
            if self._steps_to_skip > 0:
                self._steps_to_skip -= self.steps_per_execution
                return {m.name: m.result() for m in self.metrics}
            with execution.without_addn_scheduling():
                return run_steps(iterator)

        self.train_function = train_function
        return train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        super().make_test_function(force)
        run_steps = self.test_function
        if self.distribute_strategy.num_replicas_in_sync > 1 and not self.run_eagerly:
            run_steps = self._replicated_step_function(self.test_step)

        def test_function(iterator):
            with execution.without_addn_scheduling():
                return run_steps(iterator)

        self.test_function = test_function
        return test_function

    def _replicated_step_function(self, step):
        """One `step` split across the replicas, its scalar logs averaged over them.

        Keras reduces a multi-worker strategy's logs with `strategy.reduce(MEAN, axis=0)`,
        which fails on scalar logs (tensorflow#72388); `axis=None` averages them.
        Several replicas run one step per call (`compile` refuses more).
        """
        strategy = self.distribute_strategy

        @tf.function
        def run_step(iterator):
            logs = strategy.run(step, args=(next(iterator),))
            return tf.nest.map_structure(
                lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), logs)

        def function(iterator):
            try:
                return run_step(iterator)
            except tf.errors.OutOfRangeError:
                # A finite dataset ended mid-epoch: Keras's loop ends the epoch on this.
                raise StopIteration from None

        return function

    def _sampled_steps_function(self):
        """`steps_per_execution` meta-steps on in-graph sampled tasks, in one call.

        Keras's multi-step loop would reach the NumPy sampler once per step through
        `tf.numpy_function`, a fixed cost of a few tenths of a millisecond on CPU against
        a compiled update of about one millisecond for the 1-step sinusoid MLP. Here one
        call draws a chunk of meta-batches (at most `sources.SAMPLE_CHUNK_BYTES` of them),
        the steps index into it, and the loop skips Keras's placeholder iterator
        (benchmarks/RESULTS.md: 1.2x more meta-steps/s on the sinusoid MLP).
        """
        steps = self.steps_per_execution
        if self._sampler.in_graph_ops:
            return self._graph_sampled_steps_function(steps)
        chunk = self._sampler.chunk_steps(steps)

        def run_chunk(start):
            count = tf.minimum(chunk, steps - start)
            batches = self._sampler.sample_steps(self.task_step.value, count)

            def run_step(i):
                batch = TaskBatch(*(v[i] for v in batches))
                self.distribute_strategy.run(self.train_step, args=(batch,))
                return i + 1

            tf.while_loop(lambda i: i < count, run_step, [tf.constant(0)])
            return start + chunk

        # AutoGraph off (execution.FunctionCache.get says why): the loops are written out.
        @tf.function(autograph=False)
        def run_steps(unused_iterator):
            tf.while_loop(lambda start: start < steps, run_chunk, [tf.constant(0)])
            return {m.name: m.result() for m in self.metrics}

        return run_steps

    def _graph_sampled_steps_function(self, steps):
        """`steps` meta-steps whose tasks are drawn by TensorFlow ops (a `GraphSampler`):
        under XLA the call is one program (sampling, inner loops, outer gradient and
        update), with no host round trip. The program is kept as `_steps_program`."""

        def run_step(i):
            batch = self._sampler.sample_step(self.task_step.value)
            self.distribute_strategy.run(self.train_step, args=(batch,))
            return i + 1

        def steps_program():
            tf.while_loop(lambda i: i < steps, run_step, [tf.constant(0)])
            return {m.name: m.result() for m in self.metrics}

        # Keras's placeholder iterator stays outside: XLA takes no iterator argument.
        # AutoGraph off (execution.FunctionCache.get says why): the loop is written out.
        self._steps_program = tf.function(steps_program, jit_compile=self.jit, autograph=False)
        return lambda unused_iterator: self._steps_program()

    def train_step(self, data):
        batch = self._batch_from_data(data)
        return self._meta_update_fn()(batch)

    def _meta_update(self, batch):
        grads, loss, predictions, new_nts = self._meta_gradient_fn()(batch)
        self._apply_if_finite(loss, grads, new_nts)
        distribute.assign_everywhere(self.task_step, self.task_step + 1, average=False)
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
        replicas = distribute.replicas_in_sync()
        if replicas > 1:
            # The optimizer sums gradients over replicas; each holds a mean over its share.
            grads = [g / replicas for g in grads]

        def apply():
            self.optimizer.apply_gradients(zip(grads, variables))
            for variable, value in zip(self.model.non_trainable_variables, new_non_trainables):
                distribute.assign_everywhere(variable, value)

        if replicas > 1:
            apply()
            return
        apply_if_finite(apply, loss, grads)

    def _update_metrics(self, loss, query_y, predictions):
        self._loss_tracker.update_state(loss)
        flat_y = tf.reshape(query_y, tf.concat([[-1], tf.shape(query_y)[2:]], 0))
        flat_p = tf.reshape(predictions, tf.concat([[-1], tf.shape(predictions)[2:]], 0))
        for metric in self._query_metrics:
            metric.update_state(flat_y, flat_p)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        batch = sources.as_tensors(data)
        options = self.adapt_options()
        losses, predictions = self._curve_fn((self.default_adapt_steps,), options)(
            batch, self._option_tensors(options))
        return self._update_metrics(tf.reduce_mean(losses[:, 0]), batch.query_y, predictions[0])

    # ----- adaptation curves (evaluation) ---------------------------------------------

    def _option_tensors(self, options):
        return {k: tf.constant(v, self._loss_dtype()) for k, v in options.items()}

    def _curve(self, batch, options, steps):
        """Per-task query losses `[tasks, steps]` and predictions `[steps, tasks, ...]`."""
        meta = self.meta_state()

        def task_curve(task):
            support_x, support_y, query_x, query_y, index = task
            task_meta = self._meta_for_task(meta, index)
            states = self.adapt_states(task_meta, support_x, support_y, steps, **options)
            predictions = [self.predict_adapted(task_meta, state, query_x) for state in states]
            return (tf.stack([self.task_loss(query_y, p) for p in predictions]),
                    tf.stack(predictions))

        tasks = (*batch, tf.range(tf.shape(batch.support_x)[0]))
        with exact_batch_statistics():
            losses, predictions = tf.map_fn(
                task_curve, tasks,
                fn_output_signature=(tf.TensorSpec(None, self._loss_dtype()),
                                     tf.TensorSpec(None, self._loss_dtype())),
            ) if not self.vectorize else map_tasks(task_curve, tasks)
        # [tasks, steps, ...] -> [steps, tasks, ...]
        perm = [1, 0] + list(range(2, len(predictions.shape)))
        return losses, tf.transpose(predictions, perm)

    def _curve_fn(self, steps, option_names):
        steps = tuple(steps)

        def fn(batch, options):
            return self._curve(batch, options, steps)

        if self.run_eagerly:
            return fn
        return self._compiled(("curve", steps, tuple(sorted(option_names))), fn, False)

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
        if steps_per_epoch is None and isinstance(tasks, TaskDistribution):
            raise ValueError(
                "Expected `steps_per_epoch` for a TaskDistribution (an endless source). "
                "Received: steps_per_epoch=None"
            )
        replicas = self.distribute_strategy.num_replicas_in_sync
        x, example, sampler = sources.prepare(tasks, meta_batch_size, seed, replicas)
        resume.check_resumable(tasks, callbacks)
        self._check_against_model(example)
        if steps_per_epoch is None and isinstance(tasks, sources.POOL_TYPES):
            # A pass over the pool, in whole executions: Keras runs `steps_per_execution`
            # steps a call, and the epoch's step count must be the one it reports.
            passes = max(1, sources.shape_of(example.support_x)[0] // meta_batch_size)
            steps_per_epoch = -(-passes // self.steps_per_execution) * self.steps_per_execution
        if steps_per_epoch is not None and steps_per_epoch % self.steps_per_execution:
            # Keras would run the epoch's last call to a whole execution, taking (and
            # reporting) more meta-steps than asked for.
            raise ValueError(
                "Expected `steps_per_epoch` to be a multiple of the compiled "
                f"steps_per_execution={self.steps_per_execution}. Received: "
                f"steps_per_epoch={steps_per_epoch}"
            )
        if steps_per_epoch is None and isinstance(tasks, tf.data.Dataset):
            sources.check_finite(tasks, "tasks")
        if (kwargs.get("validation_steps") is None
                and isinstance(validation_tasks, tf.data.Dataset)):
            sources.check_finite(validation_tasks, "validation_tasks")
        validation_data = None
        if validation_tasks is not None:
            validation_data, validation_example = sources.validation_source(
                validation_tasks, meta_batch_size, validation_batches, seed)
            self._check_against_model(validation_example, "validation_tasks")
            sources.check_matching(example, validation_example, "validation_tasks")
        self._resolve_loss_and_metrics(tasks, example)
        self._resolve_execution()
        self._plan_memory(example)
        # The train function samples with the meta-batch size and seed it was traced with.
        sampling = (meta_batch_size, seed)
        if self._train_source is not tasks or self._train_sampling != sampling:
            self.train_function = None
            self._train_source = tasks
            self._train_sampling = sampling
            self._sampler = sampler
        self.execution_summary = execution.summary(
            self._jit_request, self._vectorize_request, self.model, self._sampler,
            self.steps_per_execution, self.run_eagerly, replicas)
        logging.getLogger("keras_meta").info("fit: %s", self.execution_summary)
        self.test_function = None
        if not self.optimizer.built:
            # The order Keras uses when it restores optimizer state (BackupAndRestore,
            # load_weights): slot variables are matched by position. Slots of a learner
            # built under a distribution strategy must be created in its scope.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        self._steps_to_skip = resume.steps_done_in_interrupted_epoch(callbacks)
        return super().fit(
            x, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
            validation_data=validation_data, verbose=verbose, initial_epoch=initial_epoch,
            validation_freq=validation_freq, shuffle=False, **kwargs,
        )

    def evaluate(self, x=None, y=None, *args, steps=None, meta_batch_size=25,
                 num_batches=10, seed=0, **kwargs):
        """Query loss and metrics after adaptation.

        With `steps` a list of adaptation-step counts (e.g. `[0, 1, 5, 10]`), adapts to
        `num_batches * meta_batch_size` held-out tasks from `x` and returns
        `{step: {"loss": ..., metric: ...}}` (see `evaluate_adaptation`; extra keyword
        arguments are the learner's adaptation options, e.g. `inner_lr`). Otherwise behaves
        like `keras.Model.evaluate` on a dataset of TaskBatch (adapting with
        `default_adapt_steps`), which is what `fit` uses for validation.

        Args:
            x: A `TaskDistribution`, a dataset of `TaskBatch` or a `TaskBatch`.
            steps: A list of adaptation-step counts, or Keras's number of batches.
            meta_batch_size: Tasks per evaluated batch (for distributions).
            num_batches: Batches to evaluate (for distributions).
            seed: Seed of the evaluated tasks.
            **kwargs: The learner's adaptation options with a list of `steps`; otherwise
                `keras.Model.evaluate` arguments.

        Returns:
            A dict keyed by step count, or what `keras.Model.evaluate` returns.
        """
        if isinstance(steps, (list, tuple)):
            return self.evaluate_adaptation(x, steps, meta_batch_size=meta_batch_size,
                                            num_batches=num_batches, seed=seed, **kwargs)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise TypeError(
                "Expected `steps` to be a list of adaptation-step counts (e.g. [0, 1, 5]) or "
                f"Keras's int number of batches. Received: steps={steps!r}"
            )
        if not isinstance(x, TaskDistribution):
            # A dataset or pool of tasks: Keras iterates it; the loss and execution mode must
            # be resolved as `fit` would (a learner evaluated right after `compile`).
            if isinstance(x, tf.data.Dataset):
                if steps is None:
                    sources.check_finite(x, "x")
                example = sources.as_task_batch(x.element_spec, "x")
            else:
                example = x = sources.pool_of(x, "x")
            sources.check_task_shapes(example, "x")
            self._check_against_model(example, "x")
            if self._loss_fn is None:
                self._resolve_loss_and_metrics(x, example)
            self._resolve_execution()
        else:
            example = sources.as_task_batch(x.sample(1, 0), "x.sample(...)")
            sources.check_task_shapes(example, "x")
            self._resolve_loss_and_metrics(x, example)
            self._resolve_execution()
            self.test_function = None
            x = sources.sampled_dataset(
                x, check_positive_int(meta_batch_size, "meta_batch_size"),
                check_positive_int(num_batches, "num_batches"), check_seed(seed))
        return super().evaluate(x, y, *args, steps=steps, **kwargs)

    def evaluate_adaptation(self, tasks, steps=(0, 1, 5, 10), meta_batch_size=25,
                            num_batches=10, seed=0, **options):
        """Mean query loss/metrics after each number of adaptation steps in `steps`.

        Args:
            tasks: A `TaskDistribution`, a dataset of `TaskBatch`, or a `TaskBatch`.
            steps: Adaptation-step counts to report (non-negative ints).
            meta_batch_size: Tasks per batch (distributions only).
            num_batches: Number of batches (distributions only).
            seed: Seed of the evaluated tasks.
            **options: The learner's adaptation options (`adapt_options`), e.g. `inner_lr`.

        Returns:
            `{step: {"loss": mean, "loss_ci95": half-width, metric: ..., metric_ci95: ...}}`:
            means over tasks with the half-width of their 95% Student-t confidence interval.
        """
        steps = tuple(check_steps(s, "steps", allow_zero=True) for s in steps)
        if not steps:
            raise ValueError("Expected `steps` to list at least one step count. Received: steps=[]")
        options = self.adapt_options(**{k: v for k, v in options.items() if v is not None})
        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        num_batches = check_positive_int(num_batches, "num_batches")
        seed = check_seed(seed)
        batches = sources.evaluation_batches(tasks, meta_batch_size, num_batches, seed)
        self._check_against_model(batches[0])
        if self._loss_fn is None or isinstance(tasks, TaskDistribution):
            self._resolve_loss_and_metrics(tasks, batches[0])
        self._resolve_execution()
        fn = self._curve_fn(steps, options)
        per_task = {s: {"loss": []} for s in steps}
        for b in batches:
            b = TaskBatch(*(tf.convert_to_tensor(np.asarray(v)) for v in b))
            losses, predictions = fn(b, self._option_tensors(options))
            for k, s in enumerate(steps):
                per_task[s]["loss"].extend(losses[:, k].numpy().tolist())
                for metric in self._query_metrics:
                    values = per_task[s].setdefault(metric.name, [])
                    for y, p in zip(b.query_y, predictions[k]):
                        metric.reset_state()
                        metric.update_state(y, p)
                        values.append(float(metric.result()))
        return {s: summarize(values) for s, values in per_task.items()}

    def adapt(self, support_x, support_y, steps=None, **options):
        """A new Keras model adapted to one task; the meta-variables are untouched.

        Args:
            support_x: Support inputs of one task, `[shots, *input_shape]`.
            support_y: Support targets, `[shots, *target_shape]`.
            steps: Adaptation steps (defaults to `default_adapt_steps`).
            **options: The learner's adaptation options (`adapt_options`), e.g. `inner_lr`.

        Returns:
            A `keras.Model` (see the learner's `adapted_model`).
        """
        steps = self.default_adapt_steps if steps is None else check_steps(
            steps, "steps", allow_zero=True)
        options = self.adapt_options(**{k: v for k, v in options.items() if v is not None})
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
        self._require_loss()

        def fn(support_x, support_y, options):
            with exact_batch_statistics():
                return self.adapt_states(self.meta_state(), support_x, support_y, (steps,),
                                         **options)[0]

        state = self._compiled(("adapt", steps, tuple(sorted(options))), fn, False)(
            tf.convert_to_tensor(support_x, self._input_dtype()),
            tf.convert_to_tensor(support_y), self._option_tensors(options))
        return self.adapted_model(state)

    def export_adaptive(self, path, steps=None, support_y_spec=None, max_steps=None,
                        format="saved_model"):
        """Writes one SavedModel (or TFLite model) that adapts to new tasks with plain TensorFlow.

        Its signatures (`keras_meta.export.export_adaptive` details them):
        `adapt(support_x, support_y, steps)` -> the adapted state as `{"state_0": ...,
        ...}` (this learner's own adaptation, e.g. the inner loop with its rule, or
        ProtoNet's prototypes, which take no `steps`), `serve(x, state_0, ...)`
        (`predict_adapted`), `serve_meta(x)` (the plain model, `model(x, training=False)`)
        and `adapt_and_serve(support_x, support_y, x, steps)`. Any support size works;
        `steps` is a scalar int32 from 0 to `max_steps`. Adaptation options take their
        defaults (e.g. the training `inner_lr`).

        Args:
            path: Directory to write the SavedModel to, or the `.tflite` file.
            steps: The default step count of the loaded methods (defaults to
                `default_adapt_steps`).
            support_y_spec: A `tf.TensorSpec` of one task's support targets (e.g.
                `tf.TensorSpec([None], tf.int32)` for class ids). Defaults to the dtype and
                shape of the support targets of the tasks last given to `fit`.
            max_steps: The most steps the `steps` argument may ask for (defaults to
                `steps`); the graph holds that many.
            format: `"saved_model"` or `"tflite"` (`keras_meta.export.to_tflite`).

        Returns:
            The saved `tf.Module`.

        Raises:
            ValueError: If there is no loss, or no `support_y_spec` and `fit` never ran,
                or TFLite cannot convert the model.
            TypeError: On a malformed `support_y_spec`, `steps` or `max_steps`.

        Example:

        ```python
        maml.export_adaptive("adaptive_dir", steps=1, max_steps=10)
        loaded = tf.saved_model.load("adaptive_dir")      # no keras_meta needed
        y = loaded.adapt_and_serve(support_x, support_y, x, tf.constant(5))["predictions"]
        ```
        """
        from keras_meta import export

        self._require_loss()
        if support_y_spec is None:
            support_y_spec = export.support_label_spec(self._train_source)
        return export.export_adaptive(self, path, support_y_spec, steps=steps,
                                      max_steps=max_steps, format=format)
