"""Stateless building blocks: forward passes at given weights, exact batch statistics,
vectorization over tasks."""

from keras_meta.ops.batch_norm import (
    BatchStatisticsNormalization,
    exact_batch_statistics,
    with_batch_statistics,
)
from keras_meta.ops import random_state
from keras_meta.ops.forward import check_tensorflow_backend, forward, variable_values
from keras_meta.ops.vectorize import map_tasks

__all__ = [
    "BatchStatisticsNormalization",
    "check_tensorflow_backend",
    "exact_batch_statistics",
    "forward",
    "map_tasks",
    "random_state",
    "variable_values",
    "with_batch_statistics",
]
