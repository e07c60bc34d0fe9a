"""Prototypical Networks (Snell et al., 2017)."""

import inspect

import keras
import numpy as np
import tensorflow as tf

from keras_meta.ops import forward
from keras_meta.training import MetaTrainer, TaskOutputs


def class_weights(support_y, dtype):
    """Support labels as a `[shots, classes]` matrix of class memberships.

    Integer class ids `[shots]` become one-hot rows with one column per support example
    (an episode has at most that many classes, and the count is static, as XLA and
    `tf.vectorized_map` need); one-hot (or soft) labels `[shots, ways]` are used as given.

    Raises:
        TypeError, ValueError: If `support_y` is neither integer `[shots]` nor floating
            `[shots, ways]`.
    """
    support_y = tf.convert_to_tensor(support_y)
    integer, floating = support_y.dtype.is_integer, support_y.dtype.is_floating
    if integer and support_y.shape.rank == 1:
        # The static support size when known; a dynamic one only outside XLA.
        depth = support_y.shape[0] or tf.shape(support_y)[0]
        return tf.one_hot(support_y, depth, dtype=dtype)
    if floating and support_y.shape.rank == 2:
        return tf.cast(support_y, dtype)
    raise (ValueError if integer or floating else TypeError)(
        "Expected support labels to be integer class ids [shots] or one-hot floats "
        f"[shots, ways]. Received: support_y with dtype={support_y.dtype.name} and "
        f"shape={tuple(support_y.shape)}"
    )


def squared_distance_logits(embeddings, prototypes, present):
    """`-||f(x) - c_k||^2` for every input and class; classes not `present` get the lowest logit.

    Args:
        embeddings: `[batch, ...]`, flattened to `[batch, dim]`.
        prototypes: `[classes, dim]`.
        present: `[classes]` bool: which classes had support examples.

    Returns:
        Logits `[batch, classes]`.
    """
    embeddings = tf.reshape(embeddings, [tf.shape(embeddings)[0], -1])
    # expand_dims, not None-indexing: TFLite has no built-in strided slice that adds axes.
    distances = tf.reduce_sum(
        tf.square(tf.expand_dims(embeddings, 1) - tf.expand_dims(prototypes, 0)), axis=-1)
    # The dtype's lowest finite value, not -inf: softmax gives such a class exactly zero
    # probability and a cross-entropy on probabilities stays finite.
    return tf.where(present, -distances, tf.constant(distances.dtype.min, distances.dtype))


@keras.saving.register_keras_serializable(package="keras_meta")
class PrototypeLogits(keras.layers.Layer):
    """Classifies embeddings by their squared Euclidean distance to stored prototypes.

    Holds `prototypes` `[classes, dim]` and `present` `[classes]` (1 for classes that had
    support examples, 0 otherwise) as non-trainable weights; outputs the logits
    `-||f(x) - c_k||^2` (the lowest finite value for absent classes).

    Args:
        classes: Number of classes (logits).
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        self.classes = int(classes)

    def build(self, input_shape):
        dim = int(np.prod(input_shape[1:]))
        self.prototypes = self.add_weight(shape=(self.classes, dim), initializer="zeros",
                                          trainable=False, name="prototypes")
        self.present = self.add_weight(shape=(self.classes,), initializer="ones",
                                       trainable=False, name="present")

    def call(self, embeddings):
        return squared_distance_logits(embeddings, tf.convert_to_tensor(self.prototypes),
                                       tf.convert_to_tensor(self.present) > 0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.classes)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def _check_loss_takes_logits(loss, learner="ProtoNet"):
    if loss is None:
        return
    fn = keras.losses.get(loss)
    if isinstance(fn, keras.losses.Loss):
        from_logits = fn.get_config().get("from_logits", True)
    else:
        parameter = inspect.signature(fn).parameters.get("from_logits")
        from_logits = True if parameter is None else parameter.default
    if not from_logits:
        raise ValueError(
            f"Expected a loss on logits: {learner} predicts logits, e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True). Received: "
            f"loss={loss!r} (from_logits=False)"
        )


@keras.saving.register_keras_serializable(package="keras_meta")
class ProtoNet(MetaTrainer):
    """Prototypical Networks: classify queries by their distance to class-mean embeddings.

    The wrapped model is the embedding network `f_phi`. For each task, with support
    examples `S_k` of class `k`, the prototypes are

        c_k = 1/|S_k| * sum_{(x_i, y_i) in S_k} f_phi(x_i),

    a query `x` gets the logits `-||f_phi(x) - c_k||^2`, and the outer loop updates `phi`
    with the optimizer on the query loss of those logits, averaged over the tasks of a
    meta-batch (the paper's `J(phi) = -log p_phi(y = k | x)` with the default loss). There
    is no inner loop: adaptation to a task is computing its prototypes, so `adapt()` and
    `evaluate(steps=...)` give the same result for every step count and take no options
    (`default_adapt_steps` is 0).

    Labels: integer class ids `0..N-1` (as `km.tasks.FewShotClassification` gives) or
    one-hot `[shots, N]` (soft labels weight the means). With integer ids the number of
    classes is not part of the labels' shape, so the logits have one column per support
    example (`N*K`); columns of classes without support examples get the dtype's lowest
    finite logit, which leaves softmax, cross-entropy and accuracy those of the `N` real
    classes (exactly `N` columns in 1-shot episodes). Tasks with different `N` (the paper
    trains with more ways than it tests) need no configuration. `adapt()` returns a model
    with exactly the `N` columns `0..N-1`.

    Loss: the compiled `loss`, else the task family's (`FewShotClassification`: sparse
    categorical cross-entropy on logits, the paper's objective), applied to the logits;
    a loss on probabilities is rejected. Metrics (e.g. `"accuracy"`) see the logits.

    The embedding runs with `training=True` (batch statistics of the data it sees, as in
    the other learners); the support pass, then the query pass, update the model's
    non-trainable state (moving statistics, random-seed state).

    Args:
        model: A built Keras 3 model, the embedding network; its output is flattened.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: If `model` is not a Keras 3 model.
        ValueError: If `model` is unbuilt.

    Example:

    ```python
    data = km.datasets.glyphs()
    tasks = km.tasks.FewShotClassification(data.images, data.labels, ways=20, shots=1,
                                           queries=15, split=data.split("background"))
    blocks = [[keras.layers.Conv2D(64, 3, padding="same"), keras.layers.BatchNormalization(),
               keras.layers.ReLU(), keras.layers.MaxPooling2D()] for _ in range(4)]
    embedding = keras.Sequential([keras.Input((28, 28, 1)), *sum(blocks, []),
                                  keras.layers.Flatten()])
    protonet = km.ProtoNet(embedding)
    protonet.compile(optimizer=keras.optimizers.Adam(1e-3))  # loss, accuracy: the family's
    protonet.fit(tasks, meta_batch_size=1, epochs=10, steps_per_epoch=1000)
    protonet.evaluate(test_tasks, steps=[0])   # {0: {"loss", "accuracy", "..._ci95"}}
    classifier = protonet.adapt(support_x, support_y)  # logits for classes 0..N-1
    classifier.export("classifier")                    # plain-TF SavedModel, `serve`
    ```
    """

    def compile(self, optimizer=None, loss=None, **kwargs):
        """`MetaTrainer.compile`; `loss`, if given, must take logits.

        Raises:
            ValueError: If `loss` expects probabilities (e.g.
                `"sparse_categorical_crossentropy"`, whose `from_logits` is False).
        """
        _check_loss_takes_logits(loss)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    # ----- the algorithm --------------------------------------------------------------

    def prototypes(self, meta, support_x, support_y):
        """Class prototypes of one task's support set.

        Args:
            meta: A `MetaState`.
            support_x: Support inputs `[shots, *input_shape]`.
            support_y: Integer class ids `[shots]` or one-hot labels `[shots, ways]`.

        Returns:
            `((prototypes [classes, dim], counts [classes]), non_trainables)`: the support
            means and the support weight of each class, and the model's non-trainable
            values after the support pass.
        """
        embeddings, non_trainables = forward(self.model, meta.params, meta.non_trainables,
                                             support_x, training=True)
        embeddings = tf.reshape(embeddings, [tf.shape(embeddings)[0], -1])
        weights = class_weights(support_y, embeddings.dtype)
        counts = tf.reduce_sum(weights, axis=0)
        # divide_no_nan: an absent class gets a zero prototype and zero gradients, not NaN.
        means = tf.math.divide_no_nan(tf.matmul(weights, embeddings, transpose_a=True),
                                      counts[:, None])
        return (means, counts), non_trainables

    def logits(self, meta, non_trainables, state, x):
        """`-||f_phi(x) - c_k||^2` and the model's non-trainable values after the pass."""
        means, counts = state
        embeddings, non_trainables = forward(self.model, meta.params, non_trainables, x,
                                             training=True)
        return squared_distance_logits(embeddings, means, counts > 0), non_trainables

    # ----- the learner protocol -------------------------------------------------------

    def task_outputs(self, meta, task):
        support_x, support_y, query_x, query_y = task
        state, non_trainables = self.prototypes(meta, support_x, support_y)
        logits, non_trainables = self.logits(meta, non_trainables, state, query_x)
        return TaskOutputs(self.task_loss(query_y, logits), logits, non_trainables)

    def adapt_states(self, meta, support_x, support_y, steps):
        """The prototypes `(means, counts)`, the same for every entry of `steps`."""
        state, _ = self.prototypes(meta, support_x, support_y)
        return [state] * len(steps)

    def predict_adapted(self, meta, state, x):
        return self.logits(meta, meta.non_trainables, state, x)[0]

    def adapted_model(self, state):
        """A functional model: a copy of the embedding network, then `PrototypeLogits`.

        It outputs logits for classes `0..N-1`, `N - 1` being the largest class id with
        support examples; it holds no reference to this learner.
        """
        means, counts = (np.asarray(v) for v in state)
        present = counts > 0
        classes = int(np.flatnonzero(present).max()) + 1
        embedding = keras.models.clone_model(self.model)
        embedding.set_weights([v.numpy() for v in self.model.weights])
        head = PrototypeLogits(classes, name="prototypes")
        adapted = keras.Model(embedding.inputs[0], head(embedding.outputs[0]),
                              name=f"{self.model.name}_prototypes")
        head.prototypes.assign(means[:classes])
        head.present.assign(present[:classes].astype(head.present.dtype))
        return adapted

    def adapt(self, support_x, support_y, steps=None, **options):
        """A classifier for one task: `-||f_phi(x) - c_k||^2` with its prototypes stored.

        Args:
            support_x: Support inputs `[shots, *input_shape]`.
            support_y: Integer class ids `[shots]` in `[0, shots)`, or one-hot `[shots, N]`.
            steps: Ignored beyond validation (ProtoNet has no adaptation steps).
            **options: None are accepted.

        Returns:
            A `keras.Model` (see `adapted_model`); the learner is untouched.

        Raises:
            TypeError: On labels of another dtype or rank, or any option (e.g. `inner_lr`).
            ValueError: On class ids outside `[0, shots)`, or as `MetaTrainer.adapt`.
        """
        labels = np.asarray(support_y)
        if labels.dtype.kind in "iu" and labels.ndim == 1 and labels.size and (
                labels.min() < 0 or labels.max() >= labels.size):
            raise ValueError(
                f"Expected integer support labels to be class ids in [0, {labels.size}) "
                "(classes 0..N-1, each with a support example). Received: support_y with "
                f"values in [{labels.min()}, {labels.max()}]"
            )
        return super().adapt(support_x, support_y, steps=steps, **options)
