"""Meta-SGD (Li et al., 2017): meta-learned per-parameter inner learning rates."""

import keras
from keras_meta import inner
from keras_meta.algorithms.base import MetaLearner


@keras.saving.register_keras_serializable(package="keras_meta")
class MetaSGD(MetaLearner):
    """Meta-SGD: MAML whose inner step size is a meta-learned tensor per weight.

    Inner update, elementwise:

        theta_i' = theta - alpha ⊙ grad L_support(T_i; theta)

    The outer loop learns both `theta` and `alpha` from the query loss at `theta_i'`.
    `alpha` starts at `inner_lr` everywhere; `learning_rates` holds it.

    Args:
        model: A built Keras 3 model.
        inner_lr: Initial value of every entry of `alpha`.
        inner_steps: Inner steps during meta-training (the paper uses 1).
        first_order: Drop second-order terms (the gradient with respect to `alpha` is
            kept either way).
        **kwargs: Passed to `keras.Model`.
    """

    def _create_meta_variables(self):
        self.learning_rates = [
            self.add_weight(
                shape=v.shape,
                initializer=keras.initializers.Constant(self.inner_lr),
                dtype=v.dtype,
                trainable=True,
                name="lr_" + v.path.replace("/", "_"),
            )
            for v in self.model.trainable_variables
        ]

    def _extra_meta_variables(self):
        return list(self.learning_rates)

    def _update_rule(self, meta_values, inner_lr):
        n = len(self.model.trainable_variables)
        rates = meta_values[n:]
        # The evaluation step size rescales the learned rates relative to training's.
        scale = inner.cast_scalar(inner_lr, rates[0].dtype) / self.inner_lr
        return inner.per_parameter_sgd([r * scale for r in rates])
