"""Meta-learners, one per module, on the learner protocol of `keras_meta.training`."""

from keras_meta.algorithms.anil import ANIL
from keras_meta.algorithms.gradient import GradientLearner
from keras_meta.algorithms.maml import FOMAML, MAML
from keras_meta.algorithms.mann import MANN
from keras_meta.algorithms.maml_pp import MAMLPlusPlus
from keras_meta.algorithms.meta_lstm import MetaLSTM
from keras_meta.algorithms.meta_sgd import MetaSGD
from keras_meta.algorithms.protonet import ProtoNet
from keras_meta.algorithms.reptile import Reptile
from keras_meta.algorithms.snail import SNAIL

# The name of the MAML-family base class before the learner protocol; kept for old code.
MetaLearner = GradientLearner

__all__ = ["ANIL", "FOMAML", "GradientLearner", "MAML", "MANN", "MAMLPlusPlus", "MetaLearner", "MetaLSTM", "MetaSGD",
           "ProtoNet", "Reptile", "SNAIL"]
