"""Figures the library reports mean what they say under every compile setting.

Meta-step counts (the task counter, Keras's progress and History), the evaluation
report's meta-steps per second and the CLI's `run.json` all count what actually ran.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta import cli
from keras_meta.evaluation import probes

TASKS = km.tasks.Sinusoid(shots=5, queries=5)


def mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def maml(steps_per_execution):
    learner = km.MAML(mlp(), inner_lr=0.01)
    learner.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                    steps_per_execution=steps_per_execution)
    return learner


class StepsSeen(keras.callbacks.Callback):
    """What Keras reports: the epoch's step count and the last batch index it announced."""

    def on_train_begin(self, logs=None):
        self.reported, self.last_batch = self.params["steps"], []

    def on_epoch_begin(self, epoch, logs=None):
        self.last_batch.append(-1)

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch[-1] = batch


def dataset_source():
    return tf.data.Dataset.from_tensors(TASKS.sample(4, 0)).repeat()


@pytest.mark.parametrize("source", [lambda: TASKS, dataset_source], ids=["distribution", "dataset"])
def test_steps_per_epoch_not_a_whole_number_of_executions_is_refused(source):
    # Keras would run the epoch's last call to a whole execution: 4 meta-steps for 3.
    learner = maml(steps_per_execution=2)
    with pytest.raises(ValueError, match=r"multiple of the compiled steps_per_execution=2\. "
                                         r"Received: steps_per_epoch=3"):
        learner.fit(source(), meta_batch_size=4, epochs=1, steps_per_epoch=3, verbose=0)
    assert int(learner.task_step.numpy()) == 0


def test_a_pool_epoch_reports_the_meta_steps_it_takes():
    # 10 tasks in meta-batches of 2: 5 per pass, run as whole executions of 2 steps.
    pool = km.tasks.TaskBatch(*(np.asarray(v) for v in TASKS.sample(10, 1)))
    learner = maml(steps_per_execution=2)
    seen = StepsSeen()
    learner.fit(pool, meta_batch_size=2, epochs=2, verbose=0, callbacks=[seen])
    taken = int(learner.task_step.numpy())
    assert taken == 2 * seen.reported == 2 * 6
    assert seen.last_batch == [seen.reported - 1] * 2


def test_meta_steps_per_second_counts_the_steps_taken(monkeypatch):
    # A clock that advances one second a reading: the rate is the meta-steps of the timed fit.
    clock = iter(range(10**6))
    monkeypatch.setattr(probes.time, "perf_counter", lambda: float(next(clock)))
    learner = maml(steps_per_execution=4)
    taken = []
    fit = learner.fit

    def counting_fit(*args, **kwargs):
        before = int(learner.task_step.numpy())
        history = fit(*args, **kwargs)
        taken.append(int(learner.task_step.numpy()) - before)
        return history

    monkeypatch.setattr(learner, "fit", counting_fit)
    options = {"meta_batch_size": 4, "inner_lr": None}
    rate = probes.SupervisedProbe(learner, options).compute(TASKS, steps=6)["meta_steps_per_second"]
    assert rate == taken[-1] == 8


@pytest.mark.parametrize("argv, flag", [
    (["train", "sinusoid", "--ways", "3"], "--ways=3 for sinusoid"),
    (["train", "glyphs", "--shots", "3"], "--shots=3 for glyphs"),
    (["train", "navigation", "--eval-lr", "0.1"], "--eval-lr=0.1 for navigation"),
    (["train", "navigation", "--shots", "2"], "--shots=2 for navigation"),
])
def test_cli_refuses_flags_the_family_ignores(argv, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("iterations, epochs, execution, expected", [
    (10000, 10, 50, (10, 1000, 50)), (15, 10, 50, (5, 3, 3)), (7, 10, 50, (7, 1, 1)),
    (500, 5, 1, (5, 100, 1)), (13, 5, 4, (1, 13, 1)),
])
def test_cli_schedule_takes_exactly_the_iterations(iterations, epochs, execution, expected):
    from keras_meta.cli import train

    got = train.schedule(iterations, epochs, execution)
    assert got == expected and got[0] * got[1] == iterations and got[1] % got[2] == 0


def test_cli_sinusoid_run_json_records_what_ran(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", "sinusoid", "--iterations", "15", "--shots", "4",
                     "--output", str(out)]) == 0
    config = json.loads((out / "run.json").read_text())["config"]
    results = json.loads((out / "results.json").read_text())
    assert config == {"iterations": 15, "shots": 4, "meta_batch_size": 25, "eval_lr": 0.01,
                      "seed": 0}
    assert results["meta_steps"] == 15 and results["eval_lr"] == 0.01
