"""Learned, coordinate-wise update rules: the meta-learner LSTM and learned optimizers.

Both apply one small network to every coordinate of every weight tensor, with parameters
shared across coordinates (so the rule works for any model):

- `meta_lstm` (Ravi & Larochelle, 2017, "Optimization as a model for few-shot learning"):
  the weights are the cell state of an LSTM whose input and forget gates are learned,
  `theta_t = f_t ⊙ theta_{t-1} + i_t ⊙ (-grad_t)`;
- `LearnedRule` (Andrychowicz et al., 2016, "Learning to learn by gradient descent by
  gradient descent"): an LSTM (or a small MLP) reads each coordinate's gradient and writes
  its update, `theta_t = theta_{t-1} + g_phi(grad_t, h_{t-1})`.

Gradients and losses enter the networks through Andrychowicz et al.'s preprocessing
(`preprocess`), which both papers use.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_meta._validation import check_choice, check_learning_rate, check_positive_int, check_seed
from keras_meta.inner.rules import UpdateRule, cast_scalar

#: The preprocessing constant `p` of both papers.
PREPROCESSING = 10.0


def preprocess(x, p=PREPROCESSING):
    """Andrychowicz et al.'s (2016, appendix A) log/sign encoding, a new last axis of 2.

    `x -> (log|x| / p, sign(x))` where `|x| >= exp(-p)`, else `(-1, exp(p) x)`: magnitudes
    over many orders become inputs of order one, and small values stay linear.

    Args:
        x: A float tensor.
        p: The constant `p` (> 0).

    Returns:
        A tensor of shape `x.shape + [2]`.
    """
    threshold = cast_scalar(math.exp(-p), x.dtype)
    big = tf.abs(x) >= threshold
    # The maximum keeps log's derivative finite on the branch tf.where discards.
    log_part = tf.where(big, tf.math.log(tf.maximum(tf.abs(x), threshold)) / p,
                        -tf.ones_like(x))
    sign_part = tf.where(big, tf.sign(x), cast_scalar(math.exp(p), x.dtype) * x)
    return tf.stack([log_part, sign_part], -1)


# ----- Ravi & Larochelle's meta-learner LSTM ------------------------------------------------

#: Inputs of each gate per coordinate: preprocessed gradient (2), preprocessed loss (2),
#: the weight itself and the gate's previous value.
META_LSTM_INPUTS = 6


def meta_lstm(input_gate, forget_gate, scale=1.0):
    """The meta-learner LSTM's update rule (Ravi & Larochelle, 2017, equations 2-3).

    For every coordinate, with `x_t = [pre(grad_t), pre(L_t), theta_{t-1}]`,

        i_t = sigmoid(W_I · [x_t, i_{t-1}] + b_I)
        f_t = sigmoid(W_F · [x_t, f_{t-1}] + b_F)
        theta_t = f_t ⊙ theta_{t-1} - scale * i_t ⊙ grad_t

    `W_I, b_I` (and `W_F, b_F`) are one vector shared by all coordinates: `input_gate` is
    `[W_I (6), b_I]`. The state is the previous gates `(i, f)`, zero at the start.

    Args:
        input_gate: A tensor `[7]`: the input gate's weights, then its bias.
        forget_gate: A tensor `[7]`: the forget gate's weights, then its bias.
        scale: Multiplies the input gate (an evaluation step size relative to training's).

    Returns:
        An `UpdateRule` with `takes_loss=True`.
    """

    def init(params):
        return [(tf.zeros_like(p), tf.zeros_like(p)) for p in params]

    def gate(weights, inputs, previous):
        weights = tf.cast(weights, previous.dtype)
        features = tf.concat([inputs, previous[..., None]], -1)
        return tf.sigmoid(tf.tensordot(features, weights[:-1], 1) + weights[-1])

    def update(grads, state, params, step, loss):
        del step
        new_params, new_state = [], []
        for p, g, (i, f) in zip(params, grads, state):
            loss_features = tf.broadcast_to(preprocess(tf.cast(loss, p.dtype)),
                                             tf.concat([tf.shape(p), [2]], 0))
            inputs = tf.concat([preprocess(g), loss_features, p[..., None]], -1)
            i = gate(input_gate, inputs, i)
            f = gate(forget_gate, inputs, f)
            new_params.append(f * p - cast_scalar(scale, p.dtype) * i * g)
            new_state.append((i, f))
        return new_params, new_state

    return UpdateRule(init, update, takes_loss=True)


# ----- Andrychowicz et al.'s learned optimizer ----------------------------------------------


def _lstm_cell(kernel, recurrent, bias, x, h, c):
    z = tf.matmul(x, kernel) + tf.matmul(h, recurrent) + bias
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


@keras.saving.register_keras_serializable(package="keras_meta")
class LearnedRule(keras.layers.Layer):
    """A coordinate-wise learned update rule (Andrychowicz et al., 2016).

    Every coordinate of every weight tensor runs the same small network on its own
    gradient history; its output, times `output_scale`, is the coordinate's update:

    - `kind="lstm"`: the paper's optimizer, a `num_layers`-layer LSTM with
      `hidden_units` units reading the preprocessed gradient (`preprocess`); the state per
      coordinate is each layer's `(h, c)`.
    - `kind="mlp"`: a stateless-network baseline, an MLP (`num_layers` tanh layers of
      `hidden_units`) reading the preprocessed gradient and the preprocessed momentum
      `m_t = 0.9 m_{t-1} + 0.1 grad_t`; the state is `m`.

    The network's weights (the layer's weights) do not depend on the model it optimises.
    Use the rule as a gradient learner's inner rule (`km.MAML(model, inner_rule=rule)`), as
    a Keras optimizer (`km.optimizers.Learned(rule)`), meta-train it with
    `km.optimizers.meta_train`, and keep it with `save` / `LearnedRule.from_file`.

    Args:
        kind: `"lstm"` or `"mlp"`.
        hidden_units: Units per layer (>= 1; the paper uses 20).
        num_layers: Hidden layers (>= 1; the paper uses 2).
        output_scale: Multiplies the network's output (the paper's 0.1).
        seed: Seed of the weights' initializers.
        **kwargs: Passed to `keras.layers.Layer` (`name`, `dtype`, `trainable`).

    Raises:
        ValueError, TypeError: On a bad argument.

    Example:

    ```python
    rule = km.optimizers.meta_train(km.optimizers.LearnedRule(),
                                    km.optimizers.Quadratics(), iterations=200)
    rule.save("rule.npz")
    model.compile(optimizer=km.optimizers.Learned.from_file("rule.npz"), loss="mse")
    ```
    """

    def __init__(self, kind="lstm", hidden_units=20, num_layers=2, output_scale=0.1, seed=0,
                 **kwargs):
        kind = check_choice(kind, "kind", ("lstm", "mlp"))
        hidden_units = check_positive_int(hidden_units, "hidden_units")
        num_layers = check_positive_int(num_layers, "num_layers")
        output_scale = check_learning_rate(output_scale, "output_scale")
        seed = check_seed(seed)
        super().__init__(**kwargs)
        self.kind, self.hidden_units, self.num_layers = kind, hidden_units, num_layers
        self.output_scale, self.seed = output_scale, seed
        inputs = 2 if kind == "lstm" else 4
        shapes = []
        for layer in range(num_layers):
            width = inputs if layer == 0 else hidden_units
            if kind == "lstm":
                shapes += [(f"kernel_{layer}", (width, 4 * hidden_units)),
                           (f"recurrent_{layer}", (hidden_units, 4 * hidden_units)),
                           (f"bias_{layer}", (4 * hidden_units,))]
            else:
                shapes += [(f"kernel_{layer}", (width, hidden_units)),
                           (f"bias_{layer}", (hidden_units,))]
        shapes += [("output_kernel", (hidden_units, 1)), ("output_bias", (1,))]
        self.network = []
        for index, (name, shape) in enumerate(shapes):
            if name.startswith("bias") and kind == "lstm":
                # Keras's unit_forget_bias: a forget gate starting open.
                initial = np.zeros(shape)
                initial[hidden_units:2 * hidden_units] = 1.0
                initializer = keras.initializers.Constant(initial)
            elif "bias" in name:
                initializer = "zeros"
            else:
                initializer = keras.initializers.GlorotUniform(seed=seed + index)
            self.network.append(self.add_weight(shape=shape, initializer=initializer,
                                                name=name))
        self.built = True

    def state_shapes(self, shape):
        """The shapes of one weight tensor's state (a list), for a tensor of `shape`."""
        shape = tuple(shape)
        if self.kind == "lstm":
            return [shape + (self.hidden_units,)] * (2 * self.num_layers)
        return [shape]

    def init_state(self, param):
        """The zero state of one weight tensor: a list of tensors."""
        return [tf.zeros(s, param.dtype) for s in self.state_shapes(param.shape)]

    def step(self, weights, grad, state, beta=0.9):
        """One coordinate-wise step for one weight tensor: `(update, new_state)`.

        Args:
            weights: The network's weights, in the order of `self.network` (the layer's
                variables or any tensors of those shapes: the meta-gradient flows to them).
            grad: The tensor's gradient.
            state: Its state (`init_state`'s structure).
            beta: The MLP's momentum decay.

        Returns:
            The update to add to the weight (same shape as `grad`) and the new state.
        """
        dtype = grad.dtype
        weights = [tf.cast(w, dtype) for w in weights]
        shape = tf.shape(grad)
        flat = tf.reshape(grad, [-1])
        rows = lambda s: tf.reshape(s, [-1, self.hidden_units])  # noqa: E731
        if self.kind == "lstm":
            x, new_state = preprocess(flat), []
            for layer in range(self.num_layers):
                kernel, recurrent, bias = weights[3 * layer:3 * layer + 3]
                h, c = _lstm_cell(kernel, recurrent, bias, x, rows(state[2 * layer]),
                                  rows(state[2 * layer + 1]))
                new_state += [tf.reshape(h, tf.shape(state[2 * layer])),
                              tf.reshape(c, tf.shape(state[2 * layer]))]
                x = h
        else:
            b = cast_scalar(beta, dtype)
            momentum = b * state[0] + (1 - b) * grad
            x = tf.concat([preprocess(flat), preprocess(tf.reshape(momentum, [-1]))], -1)
            for layer in range(self.num_layers):
                x = tf.tanh(tf.matmul(x, weights[2 * layer]) + weights[2 * layer + 1])
            new_state = [momentum]
        out = tf.matmul(x, weights[-2]) + weights[-1]
        return tf.reshape(out, shape) * cast_scalar(self.output_scale, dtype), new_state

    def update_rule(self, weights=None, scale=1.0):
        """This rule as an inner-loop `UpdateRule`, pure in `weights`.

        Args:
            weights: The network's weights (default: the layer's variables' values). Give
                tensors to differentiate with respect to them (meta-training).
            scale: Multiplies every update.

        Returns:
            An `UpdateRule` whose state is one list of tensors per weight tensor.
        """
        weights = list(self.network) if weights is None else list(weights)

        def init(params):
            return [self.init_state(p) for p in params]

        def update(grads, state, params, step):
            del step
            new_params, new_state = [], []
            for p, g, s in zip(params, grads, state):
                delta, s = self.step(weights, g, s)
                new_params.append(p + cast_scalar(scale, p.dtype) * delta)
                new_state.append(s)
            return new_params, new_state

        return UpdateRule(init, update)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "hidden_units": self.hidden_units,
                "num_layers": self.num_layers, "output_scale": self.output_scale,
                "seed": self.seed}

    def save(self, path):
        """Writes the rule (configuration and weights) to `path` (a NumPy `.npz` archive).

        Args:
            path: File path, written as given.
        """
        import json

        arrays = {f"weight_{i}": w.numpy() for i, w in enumerate(self.network)}
        with open(path, "wb") as f:
            np.savez(f, config=np.array(json.dumps(self.get_config())), **arrays)

    @classmethod
    def from_file(cls, path):
        """The rule `save` wrote to `path`.

        Raises:
            ValueError: If `path` holds no saved rule.
        """
        import json

        with np.load(path, allow_pickle=False) as archive:
            if "config" not in archive.files:
                raise ValueError(f"Expected a file written by LearnedRule.save. Received: "
                                 f"path={str(path)!r} with entries {archive.files}")
            rule = cls.from_config(json.loads(str(archive["config"])))
            rule.set_weights([archive[f"weight_{i}"] for i in range(len(rule.network))])
        return rule
