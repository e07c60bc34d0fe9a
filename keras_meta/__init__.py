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

Subpackages and the names re-exported here are imported on first use, so
`import keras_meta` itself imports neither TensorFlow nor gymnasium. A learner saved
to `.keras` is registered with Keras when its class is first used: touch it (e.g.
`km.MAML`, `km.rl.RL2`) before `keras.saving.load_model`.
"""

from keras_meta import _lazy

__version__ = "0.1.0"

# Most subpackages import Keras, and with it TensorFlow (`tasks` too, for its argument
# checks); the RL stack imports gymnasium. `import keras_meta` runs first in every
# `keras-meta --help`, so nothing is imported here: PEP 562's module `__getattr__` imports
# a subpackage or name on first access.
_SUBPACKAGES = (
    "algorithms",
    "baselines",
    "datasets",
    "evaluation",
    "export",
    "inner",
    "integrations",
    "models",
    "ops",
    "optimizers",
    "rl",
    "tasks",
    "training",
    "tuning",
)

# Public names re-exported from a subpackage: name -> the subpackage that defines it.
_NAMES = {
    "ANIL": "algorithms",
    "FOMAML": "algorithms",
    "GradientLearner": "algorithms",
    "KerasMetaWarning": "_warnings",
    "MAML": "algorithms",
    "MAMLPlusPlus": "algorithms",
    "MANN": "algorithms",
    "MetaLearner": "algorithms",
    "MetaLSTM": "algorithms",
    "MetaSGD": "algorithms",
    "MetaState": "training",
    "MetaTrainer": "training",
    "ProtoNet": "algorithms",
    "Reptile": "algorithms",
    "SNAIL": "algorithms",
    "TaskOutputs": "training",
    "TaskBatch": "tasks",
    "TaskDistribution": "tasks",
}

__all__ = sorted([*_NAMES, *_SUBPACKAGES, "__version__"])


__getattr__, __dir__ = _lazy.attach(__name__, _NAMES, _SUBPACKAGES)
