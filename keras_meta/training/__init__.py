"""The meta-training loop (`MetaTrainer`) and the learner protocol's types."""

from keras_meta.training.trainer import MetaState, MetaTrainer, TaskOutputs

__all__ = ["MetaState", "MetaTrainer", "TaskOutputs"]
