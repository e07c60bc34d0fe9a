"""Issue 17, classes 3-5 and 7: checks first, then state changes; no hangs; clear errors."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km

from learner_table import LEARNERS, mlp

TASKS = km.tasks.Sinusoid(shots=5, queries=5)


def fresh():
    learner = LEARNERS["maml"](mlp())
    learner.compile(loss="mse")
    return learner, [v.numpy() for v in learner.weights]


def unchanged(learner, before):
    for got, want in zip(learner.weights, before, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)


def test_fit_on_an_endless_dataset_without_steps_per_epoch_is_refused_not_a_hang():
    learner, before = fresh()
    endless = tf.data.Dataset.from_tensors(TASKS.sample(4, 0)).repeat()
    with pytest.raises(ValueError, match=r"Expected a finite `tasks` dataset .* Received: tasks "
                                         r"with infinite cardinality"):
        learner.fit(endless, verbose=0)
    with pytest.raises(ValueError, match=r"finite `validation_tasks`"):
        learner.fit(TASKS, meta_batch_size=4, steps_per_epoch=1, validation_tasks=endless, verbose=0)
    with pytest.raises(ValueError, match=r"finite `x`"):
        learner.evaluate(endless, verbose=0)
    unchanged(learner, before)


def test_validation_tasks_are_checked_before_the_first_epoch_trains():
    learner, before = fresh()
    pool = TASKS.sample(4, 1)
    bad = km.tasks.TaskBatch(pool.support_x, pool.support_y[..., None], pool.query_x,
                             pool.query_y[..., None])
    with pytest.raises(ValueError, match=r"Expected `validation_tasks.support_y` to hold examples "
                                         r"like the training tasks'"):
        learner.fit(TASKS, meta_batch_size=4, steps_per_epoch=2, validation_tasks=bad, verbose=0)
    wide = km.tasks.TaskBatch(np.concatenate([pool.support_x] * 2, -1), pool.support_y,
                              np.concatenate([pool.query_x] * 2, -1), pool.query_y)
    with pytest.raises(ValueError, match=r"Expected examples of `validation_tasks` to match the "
                                         r"model input shape"):
        learner.fit(TASKS, meta_batch_size=4, steps_per_epoch=2, validation_tasks=wide, verbose=0)
    assert int(learner.task_step.numpy()) == 0
    unchanged(learner, before)


def test_keras_style_evaluate_right_after_compile():
    # It failed with "'NoneType' object is not callable": the loss was resolved by fit only.
    learner, _ = fresh()
    result = learner.evaluate(TASKS.sample(8, 2), verbose=0, return_dict=True)
    assert np.isfinite(result["loss"])
    untrained = LEARNERS["maml"](mlp())
    untrained.compile()
    with pytest.raises(ValueError, match=r"Expected a loss: pass `compile\(loss=...\)`"):
        untrained.evaluate(TASKS.sample(8, 2), verbose=0)


def test_run_manifest_cannot_point_outside_the_run_folder(tmp_path):
    from keras_meta.cli.manifest import read_manifest

    outside = tmp_path / "secret.keras"
    outside.write_text("not a model")
    run = tmp_path / "run"
    run.mkdir()
    for learner_file in ("../secret.keras", str(outside), "", 3):
        (run / "run.json").write_text(json.dumps({"family": "sinusoid", "learner_file": learner_file}))
        with pytest.raises(ValueError, match=r"Expected `learner_file` in .*run.json"):
            read_manifest(run)
    (run / "link.keras").symlink_to(outside)
    (run / "run.json").write_text(json.dumps({"family": "sinusoid", "learner_file": "link.keras"}))
    with pytest.raises(ValueError, match=r"stay inside the run folder"):
        read_manifest(run)
    (run / "run.json").write_text(json.dumps({"family": "sinusoid", "learner_file": "m.keras"}))
    assert read_manifest(run)["learner_file"] == "m.keras"
