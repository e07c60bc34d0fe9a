"""The meta-learner LSTM (Ravi & Larochelle, 2017, "Optimization as a model for few-shot
learning")."""

import keras
import numpy as np

from keras_meta import inner
from keras_meta.algorithms.gradient import GradientLearner

# The forget gate's initial bias: f = sigmoid(5) = 0.993, close to 1 as the paper asks
# ("the forget gate ... initialized to be large"; its code draws it from U(4, 6)).
_FORGET_BIAS = 5.0


@keras.saving.register_keras_serializable(package="keras_meta")
class MetaLSTM(GradientLearner):
    """Ravi & Larochelle's meta-learner LSTM: the learner's weights are an LSTM's cell state.

    Each inner step updates every coordinate of the model's weights with the LSTM cell
    update of the paper (equations 2 and 3),

        i_t = sigmoid(W_I · [pre(grad_t), pre(L_t), theta_{t-1}, i_{t-1}] + b_I)
        f_t = sigmoid(W_F · [pre(grad_t), pre(L_t), theta_{t-1}, f_{t-1}] + b_F)
        theta_t = f_t ⊙ theta_{t-1} + i_t ⊙ (-grad_t)

    where `grad_t` and `L_t` are the support gradient and loss at `theta_{t-1}`, `pre` is
    Andrychowicz et al.'s log/sign preprocessing with `p = 10`, and the gate parameters
    (`input_gate = [W_I, b_I]`, `forget_gate = [W_F, b_F]`, seven numbers each) are
    shared by all coordinates. The initial cell state `theta_0` is the model's weights:
    the outer loop learns it with the gates from the query loss after `inner_steps` steps
    (`keras_meta.inner.meta_lstm` is the rule).

    The paper's first-order trick is the default (`first_order=True`): the gradients and
    losses fed to the LSTM are constants for the outer tape, so no second derivatives of
    the model are taken; the gates and `theta_0` still get exact derivatives through the
    cell updates. `first_order=False` differentiates through them as well (exact, slower).

    Initialisation: `W_I = W_F = 0`, `b_I = logit(inner_lr)`, `b_F = 5`, so the untrained
    rule is gradient descent with step `inner_lr` and a weight decay of 0.7% per step.
    The `inner_lr` option of `adapt`/`evaluate` rescales the input gate by
    `inner_lr / self.inner_lr`.

    Differences from the paper's experiments: they place an ordinary 20-unit LSTM in front
    of the gates (reading the preprocessed gradient and loss); here the preprocessed
    inputs go to the gates directly, as in the paper's equations; batch normalization
    follows the library's transductive policy (as the paper's learner does at meta-test).

    Args:
        model: A built Keras 3 model.
        inner_lr: The untrained input gate's value (> 0 and < 1).
        inner_steps: Inner steps during meta-training.
        first_order: Treat the LSTM's gradient and loss inputs as constants (the paper).
        **kwargs: Passed to `keras.Model`.

    Raises:
        ValueError: If `inner_lr` is not in (0, 1), or another argument is out of range.
        TypeError: If an argument has the wrong type.

    Example:

    ```python
    learner = km.MetaLSTM(model, inner_lr=0.1, inner_steps=5)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    learner.fit(tasks, meta_batch_size=16, steps_per_epoch=100)
    ```
    """

    def __init__(self, model, inner_lr=0.1, inner_steps=5, first_order=True, **kwargs):
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         first_order=first_order, **kwargs)
        if self.inner_lr >= 1:
            raise ValueError("Expected `inner_lr` (the initial input gate) to be below 1. "
                             f"Received: inner_lr={inner_lr!r}")
        dtype = self.model.trainable_variables[0].dtype
        inputs = inner.learned.META_LSTM_INPUTS
        self.input_gate = self.add_weight(shape=(inputs + 1,), initializer="zeros",
                                          dtype=dtype, name="input_gate")
        self.forget_gate = self.add_weight(shape=(inputs + 1,), initializer="zeros",
                                           dtype=dtype, name="forget_gate")
        # Assigned rather than a Constant initializer, which rounds through float32.
        self.input_gate.assign(np.eye(inputs + 1)[-1] * np.log(self.inner_lr / (1 - self.inner_lr)))
        self.forget_gate.assign(np.eye(inputs + 1)[-1] * _FORGET_BIAS)

    def extra_meta_variables(self):
        return [self.input_gate, self.forget_gate]

    def update_rule(self, meta, inner_lr):
        input_gate, forget_gate = meta.extras
        return inner.meta_lstm(input_gate, forget_gate, inner_lr / self.inner_lr)
