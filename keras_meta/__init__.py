"""keras_meta: meta-learning for Keras 3 on TensorFlow.

Example:

```python
import keras, keras_meta as km
model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, activation="relu"),
                          keras.layers.Dense(40, activation="relu"), keras.layers.Dense(1)])
maml = km.MAML(model, inner_lr=0.01)
maml.compile()
maml.fit(km.tasks.Sinusoid(shots=10, queries=10), meta_batch_size=25, steps_per_epoch=100)
```
"""

from keras_meta import baselines, datasets, evaluation, inner, models, rl, tasks
from keras_meta.algorithms import ANIL, FOMAML, MAML, MetaLearner, MetaSGD, Reptile
from keras_meta.tasks import TaskBatch, TaskDistribution

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "FOMAML",
    "MAML",
    "MetaLearner",
    "MetaSGD",
    "Reptile",
    "TaskBatch",
    "TaskDistribution",
    "__version__",
    "baselines",
    "datasets",
    "evaluation",
    "inner",
    "models",
    "rl",
    "tasks",
]
