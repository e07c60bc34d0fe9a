"""Task families: the `TaskBatch`/`TaskDistribution` contract and built-in families."""

from keras_meta.tasks.base import TaskBatch, TaskDistribution, step_seed
from keras_meta.tasks.regression import RegressionFamily, Sinusoid

__all__ = ["RegressionFamily", "Sinusoid", "TaskBatch", "TaskDistribution", "step_seed"]
