import json
import math

import keras
import numpy as np
import pytest

import keras_meta as km
from keras_meta import cli
from keras_meta.evaluation import SupportSubset, confidence_interval, t_quantile


def test_confidence_interval_matches_hand_computed_t_interval():
    # values 1..5: mean 3, sample sd sqrt(2.5), t_{0.975, 4} = 2.776445105,
    # half-width = 2.776445105 * sqrt(2.5) / sqrt(5) = 1.963243.
    mean, half = confidence_interval([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(2.776445105 * math.sqrt(2.5) / math.sqrt(5), rel=1e-8)
    assert half == pytest.approx(1.963243, abs=1e-6)
    # Two values: t_{0.975, 1} = 12.7062047; sd of (0, 2) is sqrt(2).
    assert confidence_interval([0.0, 2.0])[1] == pytest.approx(12.7062047 * math.sqrt(2) / math.sqrt(2), rel=1e-7)
    assert t_quantile(0.95, 9) == pytest.approx(1.833113, abs=1e-6)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-10)
    assert math.isnan(confidence_interval([4.0])[1])
    with pytest.raises(ValueError, match=r"Expected at least one value. Received: values=\[\]"):
        confidence_interval([])
    with pytest.raises(ValueError, match=r"Expected `level` in \(0, 1\). Received: level=95"):
        confidence_interval([1, 2], level=95)


def test_unknown_learner_type_is_refused():
    with pytest.raises(TypeError, match=r"Expected `learner` to be a keras_meta learner .* Received: "
                                        r"learner=.* of type Sequential"):
        km.evaluation.evaluate(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),
                               km.tasks.Sinusoid(shots=5, queries=5))


def test_support_subset_keeps_shots_per_class():
    images = np.random.default_rng(0).integers(0, 256, (60, 4, 4, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10)
    tasks = km.tasks.FewShotClassification(images, labels, ways=3, shots=4, queries=2)
    batch = SupportSubset(tasks, 2).sample(2, seed=0)
    assert batch.support_x.shape[:2] == (2, 6)
    for y in batch.support_y:
        assert sorted(np.bincount(y).tolist()) == [2, 2, 2]
    reg = SupportSubset(km.tasks.Sinusoid(shots=10, queries=5), 3).sample(2, seed=0)
    assert reg.support_x.shape == (2, 3, 1) and reg.query_x.shape == (2, 5, 1)
    with pytest.raises(ValueError, match="Expected at least 12 support examples. Received: shots=12"):
        SupportSubset(km.tasks.Sinusoid(shots=10, queries=5), 12).sample(1, seed=0)


def _maml():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    maml = km.MAML(model, inner_lr=0.01)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3))
    maml.fit(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=4, steps_per_epoch=3, verbose=0)
    return maml


def test_supervised_report_sections_tables_and_plots(tmp_path):
    maml = _maml()
    before = [w.numpy().copy() for w in maml.variables]
    report = km.evaluation.evaluate(
        maml, km.tasks.Sinusoid(shots=10, queries=20, split="test"),
        train_tasks=km.tasks.Sinusoid(shots=10, queries=20), budgets=[0, 1, 3], shots=[2, 5], seeds=[0, 1, 2],
        meta_batch_size=4, num_batches=1, compute_steps=1, report_dir=tmp_path / "report")
    for w, b in zip(maml.variables, before):  # the compute probe undoes its meta-steps
        np.testing.assert_array_equal(w.numpy(), b)
    speed = report.section("learning_speed")
    assert [r["x"] for r in speed] == [0, 1, 3] and all(len(r["values"]) == 3 for r in speed)
    for r in speed:
        assert (r["mean"], r["ci95"]) == pytest.approx(confidence_interval(r["values"]))
    # Each seed's value is the learner's own evaluate() at that seed.
    direct = maml.evaluate(km.tasks.Sinusoid(shots=10, queries=20, split="test"), steps=[1], meta_batch_size=4,
                           num_batches=1, seed=2)
    assert speed[1]["values"][2] == pytest.approx(direct[1]["loss"], rel=1e-5)
    assert [r["x"] for r in report.section("sample_efficiency")] == [2, 5]
    assert {r["x"] for r in report.section("generalization")} == {"meta-train", "meta-test", "gap (train - test)"}
    compute = {r["x"]: r["mean"] for r in report.section("compute")}
    assert compute["meta_steps_per_second"] > 0 and compute["adaptation_latency_ms"] > 0
    assert compute["peak_rss_mb"] > 0
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.md", "results.csv", "results.json", "learning_speed.png", "sample_efficiency.png",
            "generalization.png"} <= files
    assert (tmp_path / "report" / "learning_speed.png").read_bytes()[:4] == b"\x89PNG"
    assert "| inner steps | metric | mean | ±95% CI | n |" in (tmp_path / "report" / "report.md").read_text()


def test_rl_learners_share_the_harness():
    learner = km.rl.RL2(None, km.rl.BernoulliBandit(2), episodes_per_trial=3, units=4)
    report = km.evaluation.evaluate(learner, km.rl.BernoulliBandit(2), shots=[0, 2], seeds=[0, 1], num_tasks=10,
                                    compute=False)  # RL compute cost runs in benchmarks/rl2.py
    assert [r["x"] for r in report.section("learning_speed")] == [0, 1, 2]
    assert report.meta["kind"] == "rl2" and report.meta["higher_is_better"]
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    maml_rl = km.rl.MAMLRL(km.rl.GaussianPolicy(body, 2), km.rl.Navigation2D(horizon=5))
    report = km.evaluation.evaluate(maml_rl, km.rl.Navigation2D(horizon=5), budgets=[0, 1], seeds=[0, 1],
                                    num_tasks=2, episodes=2, compute=False)
    assert [r["x"] for r in report.section("learning_speed")] == [0, 1]
    assert all(r["mean"] < 0 for r in report.section("learning_speed"))
    # Per-step MAML-RL step sizes reach the learner (the second step's size changes step 2).
    curves = [[r["mean"] for r in km.evaluation.evaluate(
        maml_rl, km.rl.Navigation2D(horizon=5), budgets=[0, 2], seeds=[0], num_tasks=2, episodes=2, inner_lrs=lrs,
        compute=False).section("learning_speed")] for lrs in (None, [0.1, 0.1], [0.1, 0.05])]
    assert curves[0] == curves[1] and curves[2][0] == curves[0][0] and curves[2][1] != curves[0][1]


def test_cli_evaluate_saved_run(tmp_path, capsys):
    maml = _maml()
    maml.save(tmp_path / "maml_sinusoid.keras")
    (tmp_path / "run.json").write_text(json.dumps({"family": "sinusoid", "learner_file": "maml_sinusoid.keras",
                                                   "config": {"shots": 4, "eval_lr": 0.01}}))
    assert cli.main(["evaluate", str(tmp_path), "--seeds", "2", "--no-compute"]) == 0
    out = capsys.readouterr().out
    assert "## learning speed" in out and "## sample efficiency" in out and "## generalization" in out
    rows = (tmp_path / "evaluation" / "results.csv").read_text().splitlines()
    assert rows[0] == "section,x,metric,mean,ci95,n,values" and len(rows) > 5
    with pytest.raises(FileNotFoundError, match="Expected .*run.json"):
        cli.main(["evaluate", str(tmp_path / "evaluation")])
