"""Learned optimizers (Andrychowicz et al., 2016): meta-trained update rules, usable as the
inner rule of a gradient learner or as a Keras optimizer."""

from keras_meta.inner.learned import LearnedRule
from keras_meta.optimizers.learned import Learned
from keras_meta.optimizers.meta_train import meta_train, unrolled_loss
from keras_meta.optimizers.problems import MLPRegression, Problems, Quadratics, Stacked

__all__ = ["Learned", "LearnedRule", "MLPRegression", "Problems", "Quadratics", "Stacked",
           "meta_train", "unrolled_loss"]
