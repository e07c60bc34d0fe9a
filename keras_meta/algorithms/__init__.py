"""Supervised meta-learners, one per module."""

from keras_meta.algorithms.anil import ANIL
from keras_meta.algorithms.base import MetaLearner
from keras_meta.algorithms.maml import FOMAML, MAML
from keras_meta.algorithms.meta_sgd import MetaSGD
from keras_meta.algorithms.reptile import Reptile

__all__ = ["ANIL", "FOMAML", "MAML", "MetaLearner", "MetaSGD", "Reptile"]
