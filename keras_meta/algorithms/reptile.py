"""Reptile (Nichol et al., 2018)."""

import keras
import tensorflow as tf

from keras_meta.algorithms.gradient import GradientLearner
from keras_meta.training import TaskOutputs


@keras.saving.register_keras_serializable(package="keras_meta")
class Reptile(GradientLearner):
    """Reptile: move the meta-weights toward each task's adapted weights.

    For each task the inner loop runs `inner_steps` SGD steps on the support set,
    giving `phi_i`. The outer optimizer receives the direction

        g = theta - mean_i phi_i

    as its gradient, so with `keras.optimizers.SGD(epsilon)` the update is Reptile's
    `theta <- theta + epsilon * (mean_i phi_i - theta)`. There is no backpropagation
    through the inner loop. The reported loss is the query loss at `phi_i`.

    Args:
        model: A built Keras 3 model.
        inner_lr: Inner SGD step size.
        inner_steps: Inner steps per task (Reptile needs k > 1 to differ from joint
            training; the paper uses 5-10).
        **kwargs: Passed to `keras.Model`.
    """

    def __init__(self, model, inner_lr=0.01, inner_steps=5, first_order=True, **kwargs):
        super().__init__(model, inner_lr, inner_steps, True, **kwargs)

    def task_outputs(self, meta, task):
        support_x, support_y, query_x, query_y = task
        adapted = self.adapt_task(meta, support_x, support_y, self.inner_steps, self.inner_lr, True)
        prediction, new_non_trainables = self.query_outputs(meta, adapted, query_x)
        direction = [m - f for m, f in zip(meta.params, adapted.params)]
        # A trainable inner rule's weights have no Reptile direction: they stay as they are.
        direction += [tf.zeros_like(e) for e in meta.extras]
        return TaskOutputs(self.task_loss(query_y, prediction), prediction, new_non_trainables,
                           meta_gradient=direction)

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        return config
