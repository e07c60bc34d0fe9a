"""`SequenceLearner`: the learner protocol for model-based meta-learners (MANN, SNAIL).

A model-based learner has no inner loop: a sequence model reads a task's support set as
a sequence of (example, label) pairs and predicts the labels of query examples from
what it read. "Adapting" is reading the support sequence; the adapted state (MANN's
memory and controller state, SNAIL's support sequence) conditions the predictions.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta._validation import check_positive_int
from keras_meta.algorithms.protonet import _check_loss_takes_logits
from keras_meta.ops import forward, with_batch_statistics
from keras_meta.tasks.base import TaskBatch
from keras_meta.training import MetaTrainer, TaskOutputs


def one_hot_labels(labels, num_classes, dtype):
    """Class ids `[n]` or one-hot labels `[n, num_classes]` as one-hot rows of `dtype`.

    Raises:
        TypeError, ValueError: If `labels` is neither integer `[n]` nor floating
            `[n, num_classes]`.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer and labels.shape.rank == 1:
        return tf.one_hot(labels, num_classes, dtype=dtype)
    if labels.dtype.is_floating and labels.shape.rank == 2 and labels.shape[-1] in (None, num_classes):
        return tf.cast(labels, dtype)
    raise (ValueError if labels.dtype.is_integer or labels.dtype.is_floating else TypeError)(
        f"Expected labels to be integer class ids [shots] or one-hot floats [shots, {num_classes}]. "
        f"Received: support_y with dtype={labels.dtype.name} and shape={tuple(labels.shape)}"
    )


def check_class_ids(labels, num_classes, name="support_y"):
    """Raises a ValueError if integer `labels` (NumPy) fall outside `[0, num_classes)`."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu" and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Expected class ids in [0, {num_classes}) (num_classes={num_classes}). Received: "
            f"{name} with values in [{labels.min()}, {labels.max()}]"
        )


class SequenceHead(keras.layers.Layer):
    """Base of the sequence heads: reads a support sequence, then predicts query labels.

    Subclasses implement `read_support(embeddings, labels) -> (state, support_logits)`
    (state: a tuple of tensors, support_logits `[shots, classes]` or None) and
    `read_queries(state, embeddings) -> logits [queries, classes]`; each query is
    predicted as if it alone followed the support sequence.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, embeddings):
        raise NotImplementedError(
            f"{type(self).__name__} is called through read_support/read_queries.")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_meta")
class ConditionedHead(keras.layers.Layer):
    """A `SequenceHead` with a read support sequence stored: predicts query labels.

    Holds a copy of the head and the adapted state (non-trainable weights), and outputs
    the head's logits for each input embedding, as `SequenceLearner.predict_adapted` does.

    Args:
        head: A `SequenceHead` (or its serialized config).
        state_shapes: Shapes of the state tensors, in the head's order.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, head, state_shapes, **kwargs):
        super().__init__(**kwargs)
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        self.head = head
        self.state_shapes = [tuple(int(d) for d in shape) for shape in state_shapes]

    def build(self, input_shape):
        if not self.head.built:
            self.head.build((None, int(np.prod(input_shape[1:]))))
        self.state = [self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                      name=f"state_{i}")
                      for i, shape in enumerate(self.state_shapes)]

    def call(self, embeddings):
        embeddings = tf.reshape(embeddings, [tf.shape(embeddings)[0], -1])
        return self.head.read_queries(tuple(tf.convert_to_tensor(s) for s in self.state),
                                      embeddings)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.head.num_classes)

    def get_config(self):
        return {**super().get_config(), "head": keras.saving.serialize_keras_object(self.head),
                "state_shapes": [list(s) for s in self.state_shapes]}


class SequenceLearner(MetaTrainer):
    """A meta-learner that adapts by reading the support set as a sequence.

    The wrapped model embeds each example; a `SequenceHead` (given by the subclass to
    `set_head`, its weights meta-learned beside the model's as `extra_meta_variables`)
    reads the sequence of support embeddings with their one-hot labels and predicts the
    query labels (logits over `num_classes`). There are no adaptation steps:
    `adapt()` and `evaluate(steps=...)` give the same result for every step count.

    Args:
        model: A built Keras 3 model, the per-example embedding (output flattened).
        num_classes: Classes per episode `N`; labels are ids in `[0, N)` or one-hot `[., N]`.
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    def __init__(self, model, num_classes, **kwargs):
        num_classes = check_positive_int(num_classes, "num_classes")
        super().__init__(model, **kwargs)
        self.num_classes = num_classes

    def set_head(self, head):
        """Builds `head` (a `SequenceHead`) on the model's embeddings and makes it this
        learner's; subclasses call it in `__init__`, so its weights exist before any
        `.keras` file is loaded into them."""
        self.head = head
        head.build((None, int(np.prod(self.model.output_shape[1:]))))

    def extra_meta_variables(self):
        return list(self.head.trainable_variables)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}

    def compile(self, optimizer=None, loss=None, **kwargs):
        """`MetaTrainer.compile`; `loss`, if given, must take logits.

        Raises:
            ValueError: If `loss` expects probabilities (`from_logits=False`).
        """
        _check_loss_takes_logits(loss, type(self).__name__)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    # ----- the algorithm --------------------------------------------------------------

    def _head_scope(self, meta):
        """Reads of the head's variables give `meta.extras` (differentiable values)."""
        return keras.StatelessScope(state_mapping=list(zip(self.head.trainable_variables,
                                                           meta.extras)))

    def embed(self, meta, non_trainables, x):
        """Flattened embeddings `[n, dim]` and the model's non-trainables after the pass."""
        embeddings, non_trainables = forward(self.model, meta.params, non_trainables, x,
                                             training=True)
        return tf.reshape(embeddings, [tf.shape(embeddings)[0], -1]), non_trainables

    def read_support(self, meta, non_trainables, support_x, support_y):
        """`(state, support_logits, non_trainables)` after reading one task's support."""
        embeddings, non_trainables = self.embed(meta, non_trainables, support_x)
        labels = one_hot_labels(support_y, self.num_classes, embeddings.dtype)
        with self._head_scope(meta):
            state, support_logits = self.head.read_support(embeddings, labels)
        return state, support_logits, non_trainables

    def query_logits(self, meta, non_trainables, state, x):
        """Logits `[n, num_classes]` for inputs `x` given the read support `state`."""
        embeddings, non_trainables = self.embed(meta, non_trainables, x)
        with self._head_scope(meta):
            return self.head.read_queries(state, embeddings), non_trainables

    # ----- the learner protocol -------------------------------------------------------

    def task_outputs(self, meta, task):
        """The query loss; with support logits (MANN), the loss over the whole sequence."""
        support_x, support_y, query_x, query_y = task
        state, support_logits, non_trainables = self.read_support(
            meta, meta.non_trainables, support_x, support_y)
        logits, non_trainables = self.query_logits(meta, non_trainables, state, query_x)
        if support_logits is None:
            loss = self.task_loss(query_y, logits)
        else:
            loss = self.task_loss(tf.concat([tf.cast(support_y, query_y.dtype), query_y], 0),
                                  tf.concat([support_logits, logits], 0))
        return TaskOutputs(loss, logits, non_trainables)

    def adapt_states(self, meta, support_x, support_y, steps):
        """The read support state, the same for every entry of `steps`."""
        state, _, _ = self.read_support(meta, meta.non_trainables, support_x, support_y)
        return [state] * len(steps)

    def predict_adapted(self, meta, state, x):
        return self.query_logits(meta, meta.non_trainables, state, x)[0]

    def adapted_model(self, state):
        """A functional model: a copy of the embedding, then a `ConditionedHead`.

        It outputs logits over `num_classes` for each input; it holds the read support
        state and no reference to this learner. BatchNormalization layers of the embedding
        normalise with the statistics of the batch they are given, as `evaluate` does: pass
        a task's queries in one batch.
        """
        state = [np.asarray(s) for s in state]
        # BatchNormalization on the batch's statistics, as `predict_adapted` runs it.
        embedding = with_batch_statistics(self.model)
        head = type(self.head).from_config(self.head.get_config())
        conditioned = ConditionedHead(head, [s.shape for s in state], name="conditioned_head",
                                      dtype=self.head.dtype_policy)
        adapted = keras.Model(embedding.inputs[0], conditioned(embedding.outputs[0]),
                              name=f"{self.model.name}_{type(self).__name__.lower()}")
        head.set_weights([v.numpy() for v in self.head.weights])
        for variable, value in zip(conditioned.state, state):
            variable.assign(value)
        return adapted

    def check_episode(self, x, y, x_name="support_x", y_name="support_y"):
        """`(x, y)` as NumPy arrays after the checks `adapt` makes of a support set.

        Raises:
            ValueError, TypeError: If the counts differ, `x` is empty or does not fit the
                model, or `y` is not ids in `[0, num_classes)` / one-hot `[n, num_classes]`.
        """
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"Expected `{x_name}` and `{y_name}` to hold the same, non-zero number of "
                f"examples along axis 0. Received: {x_name}.shape={x.shape}, "
                f"{y_name}.shape={y.shape}"
            )
        self._check_against_model(TaskBatch(x[None], y[None], x[None], y[None]), x_name)
        return x, y

    def _check_against_model(self, example, name="tasks"):
        super()._check_against_model(example, name)
        labels = example.support_y
        dtype = tf.as_dtype(labels.dtype)
        rank = len(labels.shape) - 1  # without the task axis
        if dtype.is_integer and rank == 1:
            if not isinstance(labels, tf.TensorSpec):
                check_class_ids(labels, self.num_classes)
            return
        if dtype.is_floating and rank == 2 and labels.shape[-1] in (None, self.num_classes):
            return
        raise (ValueError if dtype.is_integer or dtype.is_floating else TypeError)(
            "Expected support labels to be integer class ids [shots] or one-hot floats "
            f"[shots, {self.num_classes}] per task. Received: support_y with "
            f"dtype={dtype.name} and shape={tuple(labels.shape)[1:]}"
        )
