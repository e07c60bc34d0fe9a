"""Random-seed state of a model's layers (Dropout, GaussianNoise, random augmentation).

`model.stateless_call` returns the layers' advanced `SeedGenerator` states with the other
non-trainables. The meta-step threads them so that randomness is fresh at every inner step,
for every task and at every meta-step:

- through the inner steps and on into the query pass (`thread`/`merge`);
- across the tasks of a meta-batch, which start from states made distinct by the task index
  (`for_task`);
- across meta-steps, from the state the first task ended with.
"""

import tensorflow as tf

from keras_meta import _compat

# Offsets the seed half of a task's `[seed, counter]` states: streams of distinct seeds are
# independent in TF's stateless random ops, and task 0 keeps the model's own state.
_TASK_SEED_STRIDE = 1_000_003


def seed_state_mask(model):
    """Which of `model.non_trainable_variables` are random-seed states."""
    return [_compat.is_seed_state(v) for v in model.non_trainable_variables]


def for_task(non_trainables, mask, task_index):
    """The non-trainables task `task_index` starts from: its own random-seed states."""
    if not any(mask):
        return list(non_trainables)
    out = []
    for value, is_seed in zip(non_trainables, mask):
        if is_seed:
            offset = tf.cast(task_index, value.dtype) * _TASK_SEED_STRIDE
            value = value + tf.stack([offset, tf.zeros_like(offset)])
        out.append(value)
    return out


def carried(non_trainables, mask):
    """The random-seed states among `non_trainables` (what the inner loop carries)."""
    return [v for v, is_seed in zip(non_trainables, mask) if is_seed]


def merge(non_trainables, mask, seeds):
    """`non_trainables` with their random-seed states replaced by `seeds`."""
    it = iter(seeds)
    return [next(it) if is_seed else v for v, is_seed in zip(non_trainables, mask)]
