"""Meta-SGD (Li et al., 2017): meta-learned per-parameter inner learning rates."""

import keras

from keras_meta import inner
from keras_meta.algorithms.gradient import GradientLearner


@keras.saving.register_keras_serializable(package="keras_meta")
class MetaSGD(GradientLearner):
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

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=False, **kwargs):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         first_order=first_order, **kwargs)
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

    def extra_meta_variables(self):
        return list(self.learning_rates)

    def update_rule(self, meta, inner_lr):
        # The evaluation step size rescales the learned rates relative to training's.
        scale = inner.cast_scalar(inner_lr, meta.extras[0].dtype) / self.inner_lr
        return inner.per_parameter_sgd([r * scale for r in meta.extras])
