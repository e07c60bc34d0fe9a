"""The task contract shared by every learner: `TaskBatch` and `TaskDistribution`."""

from typing import NamedTuple

import numpy as np

from keras_meta import _core
from keras_meta._validation import check_positive_int, check_seed

__all__ = ["TaskBatch", "TaskDistribution", "check_positive_int", "check_seed", "step_seed"]


class TaskBatch(NamedTuple):
    """A meta-batch of tasks; every field has a leading meta-batch axis.

    Attributes:
        support_x: Support inputs, shape `[tasks, shots, *input_shape]`.
        support_y: Support targets, shape `[tasks, shots, *target_shape]`.
        query_x: Query inputs, shape `[tasks, queries, *input_shape]`.
        query_y: Query targets, shape `[tasks, queries, *target_shape]`.
    """

    support_x: object
    support_y: object
    query_x: object
    query_y: object


def step_seed(seed, step):
    """The seed of training step `step` in a run seeded with `seed`.

    A pure function of its arguments, so a resumed run continues the same task sequence.
    """
    return _core.derive_seed(check_seed(seed), check_seed(step, "step"))


class TaskDistribution:
    """A family of tasks that can be sampled reproducibly.

    Subclasses implement `sample(meta_batch_size, seed)` as a pure function of its
    arguments, returning a `TaskBatch` of NumPy arrays. They may also set:

    - `loss`: the default Keras loss for the family (a name or a `keras.losses.Loss`).
    - `metrics`: default metrics reported on query sets, e.g. `["accuracy"]`.

    Example:

    ```python
    class Lines(km.tasks.TaskDistribution):
        loss = "mse"

        def sample(self, meta_batch_size, seed):
            rng = np.random.default_rng(seed)
            slope = rng.uniform(-2, 2, (meta_batch_size, 1, 1)).astype("float32")
            x = rng.uniform(-1, 1, (meta_batch_size, 20, 1)).astype("float32")
            y = slope * x
            return km.tasks.TaskBatch(x[:, :10], y[:, :10], x[:, 10:], y[:, 10:])
    ```
    """

    loss = None
    metrics = ()

    def sample(self, meta_batch_size, seed):
        """Returns a `TaskBatch` of `meta_batch_size` tasks; pure in (meta_batch_size, seed)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement sample(meta_batch_size, seed)."
        )

    def get_config(self):
        return {}
