"""The Keras-style training loop shared by the RL meta-learners."""

import collections

import keras
import numpy as np


def keras_style_loop(policy, step_fn, epochs, steps_per_epoch, callbacks=None, verbose=1):
    """Runs `step_fn()` `epochs * steps_per_epoch` times with Keras callbacks and a Progbar.

    Args:
        policy: The Keras model the callbacks see as `self.model` (`stop_training` is
            honoured, its `history` is returned).
        step_fn: A function of no arguments running one meta-iteration and returning
            a dict of float logs.
        epochs: Number of epochs.
        steps_per_epoch: Meta-iterations per epoch.
        callbacks: Keras callbacks.
        verbose: 0 silent, 1 a progress bar per epoch.

    Returns:
        A `keras.callbacks.History` of per-epoch mean logs.
    """
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=False, model=policy, epochs=epochs,
        steps=steps_per_epoch, verbose=verbose)
    policy.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose) if verbose else None
        epoch_logs = collections.defaultdict(list)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            step_logs = step_fn()
            for key, value in step_logs.items():
                epoch_logs[key].append(value)
            callback_list.on_train_batch_end(step, step_logs)
            if bar is not None:
                bar.update(step + 1, [(k, v) for k, v in step_logs.items()])
        logs = {k: float(np.mean(v)) for k, v in epoch_logs.items()}
        callback_list.on_epoch_end(epoch, logs)
        if getattr(policy, "stop_training", False):
            break
    callback_list.on_train_end(logs)
    return policy.history
