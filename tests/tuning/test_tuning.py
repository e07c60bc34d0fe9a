"""km.tuning: KerasTuner searches around meta-learners, locally and in KerasTuner's
distributed chief/worker mode over the loopback interface."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

kt = pytest.importorskip("keras_tuner")

import keras  # noqa: E402

import keras_meta as km  # noqa: E402

EVAL = dict(eval_steps=2, meta_batch_size=4, num_batches=2)


def sinusoid_learner(hp):
    """A tiny MAML on the sinusoid: layers, units, inner/outer learning rates, inner steps."""
    layers = [keras.layers.Dense(hp.Int("units", 4, 12, step=8), activation="relu")
              for _ in range(hp.Int("layers", 1, 2))]
    model = keras.Sequential([keras.Input((1,)), *layers, keras.layers.Dense(1)])
    maml = km.MAML(model, inner_lr=hp.Float("inner_lr", 1e-3, 0.1, sampling="log"),
                   inner_steps=hp.Int("inner_steps", 1, 2))
    # The task loop without XLA: the cheapest first call for a two-step trial.
    maml.compile(keras.optimizers.Adam(hp.Float("outer_lr", 1e-3, 1e-2, sampling="log")),
                 jit_compile=False, vectorize=False)
    return maml


def _scores(tuner):
    return {t.trial_id: t.score for t in tuner.oracle.trials.values()}


def test_bayesian_search_finds_and_reloads_the_best_learner(tmp_path):
    hypermodel = km.tuning.MetaHyperModel(sinusoid_learner, km.tasks.Sinusoid(shots=5, queries=5, split="test"),
                                          **EVAL)
    assert hypermodel.objective.name == "val_adapted_loss" and hypermodel.objective.direction == "min"
    tuner = kt.BayesianOptimization(hypermodel, objective=hypermodel.objective, max_trials=2, num_initial_points=1,
                                    seed=3, directory=tmp_path, project_name="sinusoid")
    tuner.search(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=4, steps_per_epoch=2, epochs=1, verbose=0)

    scores = _scores(tuner)
    assert len(scores) == 2 and all(np.isfinite(s) for s in scores.values())
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.score == min(scores.values())

    best = tuner.get_best_models(1)[0]
    assert km.tuning.learner_of(best) is best and isinstance(best, km.MAML)
    hp = best_trial.hyperparameters.values
    assert best.inner_steps == hp["inner_steps"]
    assert [layer.units for layer in best.model.layers[:-1]] == [hp["units"]] * hp["layers"]
    # The reloaded checkpoint holds the trained weights and optimizer state ...
    assert int(best.optimizer.iterations.numpy()) == 2
    # ... and the objective was the learner's own post-adaptation evaluation at eval_steps.
    again = best.evaluate(km.tasks.Sinusoid(shots=5, queries=5, split="test"), steps=[2], meta_batch_size=4,
                          num_batches=2, seed=0)
    np.testing.assert_allclose(again[2]["loss"], best_trial.score, rtol=1e-5)


def rl2_learner(hp):
    """A tiny RL² on the two-armed bandit; the discount is a hyperparameter."""
    keras.utils.set_random_seed(0)
    return km.rl.RL2(None, km.rl.BernoulliBandit(2), units=hp.Choice("units", [4, 8]),
                     gamma=hp.Choice("gamma", [0.9, 0.99]), episodes_per_trial=3, ppo_epochs=1)


def test_hyperband_searches_an_rl_learner(tmp_path):
    tasks = km.rl.BernoulliBandit(2).sample_tasks(4, seed=99)
    hypermodel = km.tuning.MetaHyperModel(rl2_learner, tasks, metric="return")
    assert hypermodel.objective.direction == "max"
    tuner = kt.Hyperband(hypermodel, objective=hypermodel.objective, max_epochs=2, factor=2, hyperband_iterations=1,
                         seed=0, directory=tmp_path, project_name="bandit")
    tuner.search(meta_batch_size=2, verbose=0)

    trials = list(tuner.oracle.trials.values())
    assert len(trials) >= 2 and all(np.isfinite(t.score) for t in trials)
    # Hyperband continued at least one trial from its parent's checkpoint (epochs 1 -> 2).
    assert any(t.hyperparameters.values.get("tuner/initial_epoch", 0) > 0 for t in trials)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    learner = km.tuning.learner_of(tuner.get_best_models(1)[0])
    assert isinstance(learner, km.rl.RL2)
    assert learner.gamma == best_trial.hyperparameters.values["gamma"]
    validation = km.tuning.AdaptedValidation(learner, tasks)
    np.testing.assert_allclose(validation.evaluate()["return"], best_trial.score, rtol=1e-6)


# --------------------------------------------------------------------------- distributed

_PROCESS = textwrap.dedent("""
    import json, os, pathlib, sys, time
    sys.path.insert(0, {tests!r})
    import keras_tuner as kt
    import keras_meta as km
    from test_tuning import EVAL, sinusoid_learner

    folder = pathlib.Path({folder!r})
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    ran = []

    class Tuner(kt.RandomSearch):
        def on_trial_begin(self, trial):
            ran.append(trial.trial_id)
            super().on_trial_begin(trial)

    hypermodel = km.tuning.MetaHyperModel(
        sinusoid_learner, km.tasks.Sinusoid(shots=5, queries=5, split="test"), **EVAL)
    tuner = Tuner(hypermodel, objective=hypermodel.objective, max_trials=2, seed=0,
                  directory=str(folder), project_name="distributed")
    if tuner_id != "chief":
        # Both workers ask the chief for trials only once both are up, so each gets one.
        (folder / f"ready_{{tuner_id}}").touch()
        deadline = time.time() + 120
        while len(list(folder.glob("ready_*"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
    tuner.search(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=4, steps_per_epoch=2,
                 epochs=1, verbose=0)
    (folder / f"ran_{{tuner_id}}.json").write_text(json.dumps(ran))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port, process, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the chief exited early with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the chief did not listen on 127.0.0.1:{port} within {timeout}s")


def test_distributed_chief_and_two_workers(tmp_path):
    port = _free_port()
    script = tmp_path / "tune.py"
    script.write_text(_PROCESS.format(tests=str(pathlib.Path(__file__).parent), folder=str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port), CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="3")
    processes = {}
    try:
        def start(tuner_id):
            # Output to files: a full pipe would block a process nobody reads from.
            with open(tmp_path / f"{tuner_id}.log", "wb") as log:
                processes[tuner_id] = subprocess.Popen(
                    [sys.executable, str(script)], env={**env, "KERASTUNER_TUNER_ID": tuner_id},
                    stdout=log, stderr=subprocess.STDOUT)

        start("chief")
        _wait_listening(port, processes["chief"], timeout=120)
        start("tuner0")
        start("tuner1")
        for tuner_id in ("tuner0", "tuner1"):
            code = processes[tuner_id].wait(timeout=240)
            assert code == 0, (tmp_path / f"{tuner_id}.log").read_text()[-3000:]
    finally:
        # The chief keeps serving (and polls every 20 s before exiting): end every process.
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()

    ran = {t: json.loads((tmp_path / f"ran_{t}.json").read_text()) for t in ("tuner0", "tuner1")}
    assert all(len(ids) == 1 for ids in ran.values()), ran
    # The chief's oracle recorded both workers' trials, completed with their objective.
    project = tmp_path / "distributed"
    recorded = {p.parent.name.removeprefix("trial_"): json.loads(p.read_text())
                for p in project.glob("trial_*/trial.json")}
    assert sorted(recorded) == sorted(ran["tuner0"] + ran["tuner1"])
    for trial in recorded.values():
        assert trial["status"] == "COMPLETED"
        assert np.isfinite(trial["score"])
    # A fresh tuner in this process reloads the chief's oracle and the best worker's model.
    tuner = kt.RandomSearch(km.tuning.MetaHyperModel(sinusoid_learner, km.tasks.Sinusoid(split="test"), **EVAL),
                            objective=kt.Objective("val_adapted_loss", "min"), max_trials=2,
                            directory=tmp_path, project_name="distributed")
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.score == min(t["score"] for t in recorded.values())
    assert isinstance(tuner.get_best_models(1)[0], km.MAML)
