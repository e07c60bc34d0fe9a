"""keras_meta: meta-learning for Keras 3 on TensorFlow."""

from keras_meta import tasks

__version__ = "0.1.0"

__all__ = ["tasks", "__version__"]
