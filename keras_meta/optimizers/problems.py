"""Families of optimisation problems to meta-train and test learned optimizers on.

A family samples problems: `sample(seed) -> (params, data)`, the starting weights (a list
of NumPy arrays) and the problem's data (a tuple of NumPy arrays), a pure function of
`seed`; `loss(params, data)` is the (differentiable, TensorFlow) objective.
"""

import numpy as np
import tensorflow as tf

from keras_meta._validation import check_learning_rate, check_positive_int, check_seed


class Problems:
    """Base class of a family of optimisation problems (see the module docstring)."""

    def sample(self, seed):
        """`(params, data)` of the problem drawn with `seed`: lists/tuples of NumPy arrays."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(seed).")

    def loss(self, params, data):
        """The objective at `params` (a list of tensors) for `data`: a scalar tensor."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(params, data).")


class Quadratics(Problems):
    """Andrychowicz et al.'s (2016) quadratics: `f(theta) = ||W theta - y||^2`.

    `W` (`dim x dim`), `y` and the start `theta_0` are drawn i.i.d. from
    `N(0, scale^2)`, `N(0, scale^2)` and `N(0, 1)`.

    Args:
        dim: The dimension (>= 1; the paper's 10).
        scale: Standard deviation of `W` and `y` (> 0).
        dtype: NumPy dtype of the arrays.
    """

    def __init__(self, dim=10, scale=1.0, dtype="float32"):
        self.dim = check_positive_int(dim, "dim")
        self.scale = check_learning_rate(scale, "scale")
        self.dtype = np.dtype(dtype)

    def sample(self, seed):
        rng = np.random.default_rng(check_seed(seed))
        w = rng.normal(0, self.scale, (self.dim, self.dim)).astype(self.dtype)
        y = rng.normal(0, self.scale, (self.dim,)).astype(self.dtype)
        theta = rng.normal(0, 1, (self.dim,)).astype(self.dtype)
        return [theta], (w, y)

    def loss(self, params, data):
        w, y = data
        return tf.reduce_sum(tf.square(tf.linalg.matvec(w, params[0]) - y))


class MLPRegression(Problems):
    """Fit a random sine wave with a freshly initialised one-hidden-layer MLP.

    A problem is `y = a sin(x + phase)` on `points` inputs `x ~ U(-5, 5)`, `a ~ U(0.1, 5)`,
    `phase ~ U(0, pi)` (the sinusoid family of MAML), and the MLP
    `x -> activation(x W1 + b1) W2 + b2` starting from Glorot-uniform weights and zero
    biases; the loss is the mean squared error.

    Args:
        hidden_units: Width of the hidden layer.
        activation: `"sigmoid"`, `"tanh"` or `"relu"`.
        points: Examples per problem (full batch).
        dtype: NumPy dtype of the arrays.
    """

    _ACTIVATIONS = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu}

    def __init__(self, hidden_units=20, activation="sigmoid", points=32, dtype="float32"):
        self.hidden_units = check_positive_int(hidden_units, "hidden_units")
        if activation not in self._ACTIVATIONS:
            raise ValueError(f"Expected `activation` to be one of {sorted(self._ACTIVATIONS)}. "
                             f"Received: activation={activation!r}")
        self.activation = activation
        self.points = check_positive_int(points, "points")
        self.dtype = np.dtype(dtype)

    def sample(self, seed):
        rng = np.random.default_rng(check_seed(seed))
        x = rng.uniform(-5, 5, (self.points, 1))
        y = rng.uniform(0.1, 5) * np.sin(x + rng.uniform(0, np.pi))
        h = self.hidden_units
        limit_1, limit_2 = np.sqrt(6 / (1 + h)), np.sqrt(6 / (h + 1))
        params = [rng.uniform(-limit_1, limit_1, (1, h)), np.zeros(h),
                  rng.uniform(-limit_2, limit_2, (h, 1)), np.zeros(1)]
        return [p.astype(self.dtype) for p in params], (x.astype(self.dtype),
                                                          y.astype(self.dtype))

    def loss(self, params, data):
        x, y = data
        w1, b1, w2, b2 = params
        prediction = tf.matmul(self._ACTIVATIONS[self.activation](tf.matmul(x, w1) + b1), w2) + b2
        return tf.reduce_mean(tf.square(prediction - y))


class Stacked(Problems):
    """`size` problems of one family as one problem: every weight and data array gains a
    leading axis of `size`, and the loss is the sum of the problems' losses, so each
    problem's gradient is its own and a coordinate-wise rule (or any elementwise rule:
    SGD, Adam) updates all of them at once exactly as it would one by one.

    Args:
        problems: The family.
        size: Problems stacked (>= 1).
    """

    def __init__(self, problems, size):
        self.problems = problems
        self.size = check_positive_int(size, "size")

    def sample_many(self, seeds):
        """The stacked `(params, data)` of the problems drawn with `seeds`."""
        drawn = [self.problems.sample(seed) for seed in seeds]
        params = [np.stack(p) for p in zip(*(d[0] for d in drawn))]
        data = tuple(np.stack(d) for d in zip(*(d[1] for d in drawn)))
        return params, data

    def losses(self, params, data):
        """Each problem's loss, `[size]` (one vectorized graph, not `size` copies)."""
        return tf.vectorized_map(lambda args: self.problems.loss(list(args[0]), tuple(args[1])),
                                 (list(params), tuple(data)))

    def loss(self, params, data):
        return tf.reduce_sum(self.losses(params, data))
