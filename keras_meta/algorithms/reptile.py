"""Reptile (Nichol et al., 2018)."""

import keras

from keras_meta.algorithms.base import MetaLearner
from keras_meta.functional import forward


@keras.saving.register_keras_serializable(package="keras_meta")
class Reptile(MetaLearner):
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

    differentiates_inner_loop = False

    def __init__(self, model, inner_lr=0.01, inner_steps=5, first_order=True, **kwargs):
        super().__init__(model, inner_lr, inner_steps, True, **kwargs)

    def _task_outputs(self, meta_values, non_trainables, task):
        support_x, support_y, query_x, query_y = task
        fast = self._adapt_task(meta_values, non_trainables, support_x, support_y,
                                self.inner_steps, self.inner_lr, True)
        prediction, new_non_trainables = forward(self.model, fast, non_trainables, query_x,
                                                 training=True)
        direction = [m - f for m, f in zip(meta_values, fast)]
        return self._loss(query_y, prediction), prediction, new_non_trainables, direction

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        return config
