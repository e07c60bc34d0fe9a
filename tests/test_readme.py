"""The README's code runs: the quickstart as written, the meta-RL snippet at smaller sizes."""

import importlib.util
import pathlib
import re

import keras
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block_after(heading):
    section = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it exports to ./adapted_dir
    keras.utils.set_random_seed(0)  # the snippet's model starts from Keras's random init
    namespace = {}
    exec(compile(_first_python_block_after("## Quickstart"), str(README), "exec"), namespace)

    history, maml, adapted = namespace["history"], namespace["maml"], namespace["adapted"]
    losses = history.history["loss"]
    assert len(losses) == 5 and "val_loss" in history.history
    assert losses[-1] < losses[0]
    assert (tmp_path / "adapted_dir" / "saved_model.pb").is_file()
    # Adaptation moved the copy's weights and left the meta-weights alone.
    meta, fast = maml.model.get_weights(), adapted.get_weights()
    assert any(not np.array_equal(m, f) for m, f in zip(meta, fast))
    query_x, query_y = namespace["query_x"][0], namespace["query_y"][0]
    before = float(np.mean((maml.model.predict(query_x, verbose=0) - query_y) ** 2))
    after = float(np.mean((adapted.predict(query_x, verbose=0) - query_y) ** 2))
    assert after < before


def test_meta_rl_snippet_runs_with_fewer_iterations():
    code = _first_python_block_after("## Meta-RL")
    # The README's sizes train for minutes; the calls and arguments are what is checked here.
    smaller = {"epochs=100": "epochs=1", "meta_batch_size=20": "meta_batch_size=2",
               "episodes_per_task=20": "episodes_per_task=2", "sample_tasks(40,": "sample_tasks(2,",
               "episodes=20": "episodes=2"}
    for old, new in smaller.items():
        assert old in code, old
        code = code.replace(old, new)
    keras.utils.set_random_seed(0)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert len(namespace["history"].history["post_return"]) == 1
    policy, learner = namespace["policy"], namespace["learner"]
    assert any(not np.array_equal(a, m) for a, m in
               zip(policy.get_weights(), learner.policy.get_weights()))


def test_writing_your_own_learner_runs_as_written():
    code = _first_python_block_after("## Writing your own learner")
    assert len(code.strip().splitlines()) < 60
    keras.utils.set_random_seed(0)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    losses = namespace["history"].history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    learner, adapted = namespace["learner"], namespace["adapted"]
    assert set(namespace["curve"]) == {0} and namespace["curve"][0]["loss"] < losses[0]
    # The standalone adapted model predicts what the learner's protocol predicts.
    import tensorflow as tf
    support_x, support_y = namespace["support_x"][0], namespace["support_y"][0]
    query_x = namespace["query_x"][0]
    meta = learner.meta_state()
    head = learner.adapt_states(meta, tf.constant(support_x), tf.constant(support_y), (0,))[0]
    np.testing.assert_allclose(adapted.predict(query_x, verbose=0),
                               learner.predict_adapted(meta, head, tf.constant(query_x)),
                               rtol=1e-4, atol=1e-5)
    # It is a Keras object like any other: saved and loaded back with its config.
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(learner))
    assert clone.l2 == learner.l2


def test_tf_agents_agents_snippet_runs_for_one_iteration(tmp_path, monkeypatch):
    if importlib.util.find_spec("tf_agents") is None:  # importing it here would bypass the bridge's env setup
        pytest.skip("needs the tf-agents extra")
    monkeypatch.chdir(tmp_path)  # it exports to ./maml_policy
    code = _first_python_block_after("## Meta-RL with TF-Agents agents")
    for old, new in {"T, E, H = 10, 10, 20": "T, E, H = 2, 2, 5", "range(100)": "range(1)"}.items():
        assert old in code, old
        code = code.replace(old, new)
    keras.utils.set_random_seed(0)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    agent = namespace["agent"]
    assert int(agent.train_step_counter.numpy()) == 1 and agent.phase == 0
    assert np.isfinite(float(namespace["loss_info"].loss))
    assert (tmp_path / "maml_policy" / "saved_model.pb").is_file()
