"""Exact resume: which steps of an interrupted epoch a restored run passes over."""

import json
import os

import keras

from keras_meta import _compat


def steps_done_in_interrupted_epoch(callbacks):
    """Batches of the epoch that a BackupAndRestore backup was taken in.

    Keras's BackupAndRestore restores the weights and the epoch, and restarts that
    epoch from batch 0; with `save_freq=N` its metadata records the last batch seen.
    """
    for callback in callbacks or []:
        if not isinstance(callback, keras.callbacks.BackupAndRestore):
            continue
        path = _compat.backup_metadata_path(callback)
        if callback.save_freq == "epoch" or not os.path.exists(path):
            return 0
        with open(path) as f:
            return int(json.load(f).get("batch", -1)) + 1
    return 0
