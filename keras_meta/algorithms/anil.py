"""ANIL (Raghu et al., 2020): almost no inner loop."""

import keras

from keras_meta.algorithms.gradient import GradientLearner, head_mask


@keras.saving.register_keras_serializable(package="keras_meta")
class ANIL(GradientLearner):
    """ANIL: MAML whose inner loop adapts only the head (the last weighted layers).

    Inner update on the head weights `w` only, body weights `phi` fixed:

        w_i' = w - alpha * grad_w L_support(T_i; phi, w)

    The outer loop updates `phi` and `w` from `mean_i L_query(T_i; phi, w_i')`.

    Args:
        model: A built Keras 3 model.
        inner_lr: Inner step size.
        inner_steps: Inner steps during meta-training.
        first_order: Drop second-order terms.
        head_layers: How many of the model's last weighted layers form the head.
        **kwargs: Passed to `keras.Model`.
    """

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=False, head_layers=1,
                 **kwargs):
        if isinstance(head_layers, bool) or not isinstance(head_layers, int) or head_layers < 1:
            raise ValueError(
                f"Expected `head_layers` to be a positive integer. Received: head_layers={head_layers!r}"
            )
        super().__init__(model, inner_lr, inner_steps, first_order, **kwargs)
        self.head_layers = head_layers
        self._mask = head_mask(model, head_layers)
        if all(self._mask):
            raise ValueError(
                "Expected `head_layers` to leave at least one weighted layer in the body. "
                f"Received: head_layers={head_layers} for a model with "
                f"{len(model.trainable_variables)} trainable weights all in the head"
            )

    def adapted_mask(self):
        return list(self._mask)

    def get_config(self):
        return {**super().get_config(), "head_layers": self.head_layers}
