"""Exact resume: which steps of an interrupted epoch a restored run passes over."""

import json
import os

import keras
import tensorflow as tf

from keras_meta import _compat


def backups(callbacks):
    """The `keras.callbacks.BackupAndRestore` callbacks among `callbacks`."""
    return [c for c in callbacks or [] if isinstance(c, keras.callbacks.BackupAndRestore)]


def resuming(callbacks):
    """Whether a BackupAndRestore callback holds a backup that this fit will restore."""
    return any(os.path.exists(_compat.backup_metadata_path(c)) for c in backups(callbacks))


def check_resumable(tasks, callbacks):
    """Refuses to resume from a backup when the source's position cannot be restored.

    A distribution or a pool is sampled from (seed, step), so a resumed run draws what the
    uninterrupted one would have. A `tf.data.Dataset` restarts from its first element, and
    how far the interrupted run had read is not part of the backup.

    Raises:
        ValueError: For a dataset source with a backup to restore.
    """
    if isinstance(tasks, tf.data.Dataset) and resuming(callbacks):
        raise ValueError(
            "Expected a TaskDistribution or a TaskBatch pool to resume from a BackupAndRestore "
            "backup: their tasks are a function of (seed, step), so the resumed run continues "
            "the same sequence, while a tf.data.Dataset would restart from its first element "
            "and train on different tasks. Received: tasks of type tf.data.Dataset and a "
            "backup to restore. Pass the tasks as a TaskDistribution or a TaskBatch of arrays, "
            "or delete the backup directory to start over."
        )


def steps_done_in_interrupted_epoch(callbacks):
    """Batches of the epoch that a BackupAndRestore backup was taken in.

    Keras's BackupAndRestore restores the weights and the epoch, and restarts that
    epoch from batch 0; with `save_freq=N` its metadata records the last batch seen.
    """
    for callback in backups(callbacks):
        path = _compat.backup_metadata_path(callback)
        if callback.save_freq == "epoch" or not os.path.exists(path):
            return 0
        with open(path) as f:
            return int(json.load(f).get("batch", -1)) + 1
    return 0
