"""Task families: the `TaskBatch`/`TaskDistribution` contract and built-in families."""

from keras_meta.tasks.base import TaskBatch, TaskDistribution, step_seed
from keras_meta.tasks.classification import FewShotClassification
from keras_meta.tasks.generated import ConditionalGAN, GeneratedClasses, MixedTasks
from keras_meta.tasks.regression import (
    Linear,
    Polynomial,
    RegressionFamily,
    Sinusoid,
    StepFunction,
)

__all__ = [
    "ConditionalGAN",
    "FewShotClassification",
    "GeneratedClasses",
    "Linear",
    "MixedTasks",
    "Polynomial",
    "RegressionFamily",
    "Sinusoid",
    "StepFunction",
    "TaskBatch",
    "TaskDistribution",
    "step_seed",
]
