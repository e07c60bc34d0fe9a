"""MAML and first-order MAML (Finn et al., 2017)."""

import keras

from keras_meta.algorithms.gradient import GradientLearner


@keras.saving.register_keras_serializable(package="keras_meta")
class MAML(GradientLearner):
    """Model-Agnostic Meta-Learning.

    For each task `T_i` of a meta-batch, the inner loop takes `inner_steps` gradient
    steps on the support set at fast weights,

        theta_i^(k+1) = theta_i^(k) - alpha * grad L_support(T_i; theta_i^(k)),  theta_i^(0) = theta,

    and the outer loop updates the meta-weights with the optimizer on

        grad_theta  mean_i  L_query(T_i; theta_i^(K)),

    differentiating through the inner loop (second order). With `first_order=True`
    (FOMAML) the inner gradients are treated as constants, which drops the Hessian terms.

    Args:
        model: A built Keras 3 model.
        inner_lr: Inner step size `alpha`.
        inner_steps: Inner steps `K` during meta-training.
        first_order: Drop second-order terms.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, activation="relu"),
                              keras.layers.Dense(40, activation="relu"), keras.layers.Dense(1)])
    maml = km.MAML(model, inner_lr=0.01)
    maml.compile()
    maml.fit(km.tasks.Sinusoid(shots=10, queries=10), meta_batch_size=25, steps_per_epoch=100)
    adapted = maml.adapt(support_x, support_y, steps=5)
    ```

    Batch normalization: the inner loop and the query pass use the batch statistics of
    the data they see (transductive, as in the MAML paper), with exact higher-order
    derivatives; moving statistics are updated from the query passes, averaged over tasks.
    """


@keras.saving.register_keras_serializable(package="keras_meta")
class FOMAML(MAML):
    """First-order MAML: `MAML(model, first_order=True)`.

    The meta-gradient is the query-loss gradient at the adapted weights,
    `mean_i grad L_query(T_i; theta_i^(K))`, with no backpropagation through the
    inner loop's gradients.
    """

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=True, **kwargs):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         first_order=first_order, **kwargs)
