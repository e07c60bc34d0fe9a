"""`Learned`: a meta-trained coordinate-wise update rule as a Keras optimizer."""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.inner.learned import LearnedRule


@keras.saving.register_keras_serializable(package="keras_meta")
class Learned(keras.optimizers.Optimizer):
    """A Keras optimizer whose update is a `LearnedRule` (Andrychowicz et al., 2016).

    For every model variable `theta` with gradient `g`, one step is

        theta <- theta + learning_rate * rule(g, state),

    where `rule` is the coordinate-wise network of `keras_meta.inner.LearnedRule` and
    `state` its per-variable state (an LSTM's `(h, c)` per layer for every coordinate,
    or the MLP rule's momentum), kept as optimizer variables: saved with the model's
    optimizer state. The rule's weights are fixed (they are not trained by `fit`); they
    travel in the optimizer's configuration, so a model compiled with this optimizer
    saves and loads as a `.keras` file like any other.

    Args:
        rule: A `LearnedRule` (e.g. from `km.optimizers.meta_train` or
            `LearnedRule.from_file`), or the `{"config", "weights"}` dict `get_config`
            writes.
        learning_rate: Multiplies the rule's update (1.0: the update it was trained to
            make). A float or a Keras schedule.
        name: The optimizer's name.
        **kwargs: Other `keras.optimizers.Optimizer` arguments (`clipnorm`, ...).

    Raises:
        TypeError: If `rule` is not a `LearnedRule`.

    Example:

    ```python
    model.compile(optimizer=km.optimizers.Learned.from_file("rule.npz"), loss="mse")
    model.fit(x, y, epochs=5)
    ```
    """

    def __init__(self, rule, learning_rate=1.0, name="learned", **kwargs):
        if isinstance(rule, dict) and set(rule) == {"config", "weights"}:
            weights = [np.asarray(w, "float32") for w in rule["weights"]]
            rule = LearnedRule.from_config(rule["config"])
            rule.set_weights(weights)
        if not isinstance(rule, LearnedRule):
            raise TypeError("Expected `rule` to be a keras_meta.inner.LearnedRule. Received: "
                            f"rule of type {type(rule).__name__}")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rule = rule

    @classmethod
    def from_file(cls, path, **kwargs):
        """A `Learned` optimizer with the rule `LearnedRule.save` wrote to `path`.

        Args:
            path: The rule's file.
            **kwargs: Passed to the constructor (`learning_rate`, ...).
        """
        return cls(LearnedRule.from_file(path), **kwargs)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._states = [
            [self.add_variable(shape, dtype=v.dtype, name=f"state_{j}")
             for j, shape in enumerate(self.rule.state_shapes(v.shape))]
            for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        state = self._states[self._get_variable_index(variable)]
        # Embedding gradients arrive as IndexedSlices; the rule reads every coordinate.
        gradient = tf.cast(tf.convert_to_tensor(gradient), variable.dtype)
        delta, new_state = self.rule.step(self.rule.network, gradient,
                                          [tf.convert_to_tensor(s) for s in state])
        for slot, value in zip(state, new_state):
            self.assign(slot, value)
        self.assign_add(variable, tf.cast(learning_rate, variable.dtype) * delta)

    def get_config(self):
        return {**super().get_config(),
                "rule": {"config": self.rule.get_config(),
                         "weights": [w.tolist() for w in self.rule.get_weights()]}}
