"""Non-meta-learned baselines that meta-learners are compared against."""

import keras
import numpy as np

from keras_meta.tasks.base import check_positive_int, step_seed


def pretrained(model, tasks, steps, meta_batch_size=25, loss=None, optimizer=None, seed=0,
               verbose=0):
    """Joint training: fits `model` to the pooled examples of many tasks (MAML's baseline).

    Each of the `steps` gradient steps sees every support and query example of one
    meta-batch drawn exactly as meta-training would draw it.

    Args:
        model: A built Keras 3 model (trained in place).
        tasks: A `TaskDistribution`.
        steps: Number of optimizer steps.
        meta_batch_size: Tasks pooled into each step's batch.
        loss: Loss (defaults to the family's).
        optimizer: Optimizer (defaults to Adam(1e-3)).
        seed: Run seed.
        verbose: Keras verbosity.

    Returns:
        The trained `model`.
    """
    steps = check_positive_int(steps, "steps")
    batches = [tasks.sample(meta_batch_size, step_seed(seed, s)) for s in range(steps)]
    x = np.stack([np.concatenate([b.support_x, b.query_x], 1).reshape(-1, *b.support_x.shape[2:])
                  for b in batches])
    y = np.stack([np.concatenate([b.support_y, b.query_y], 1).reshape(-1, *b.support_y.shape[2:])
                  for b in batches])
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), loss=loss or tasks.loss)
    model.fit(x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:]), batch_size=x.shape[1],
              epochs=1, shuffle=False, verbose=verbose)
    return model


__all__ = ["pretrained"]
