"""Generic behaviour of every learner in the shared table."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.tasks import TaskBatch
from keras_meta.training import sources

from learner_table import LEARNERS, MODES, assert_modes_agree, mlp, reloaded, weights_of

TASKS = km.tasks.Sinusoid(shots=5, queries=5)


class Lines(km.tasks.TaskDistribution):
    """A user-defined family: y = slope * x."""

    loss = "mse"

    def sample(self, meta_batch_size, seed):
        rng = np.random.default_rng(seed)
        slope = rng.uniform(-2, 2, (meta_batch_size, 1, 1)).astype("float32")
        x = rng.uniform(-1, 1, (meta_batch_size, 8, 1)).astype("float32")
        y = slope * x
        return TaskBatch(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])


def trained(name, mode="function", steps=3, tasks=TASKS, loss=None, **fit_kwargs):
    learner = LEARNERS[name](mlp())
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, **MODES[mode])
    history = learner.fit(tasks, meta_batch_size=4, epochs=1, steps_per_epoch=steps, verbose=0,
                          **fit_kwargs)
    return learner, history


@pytest.mark.parametrize("name", LEARNERS)
def test_execution_modes_agree(name):
    assert_modes_agree({mode: trained(name, mode) for mode in MODES},
                       weights_of(LEARNERS[name](mlp())))


@pytest.mark.parametrize("name", LEARNERS)
def test_xla_vectorized_meta_step_compiles_for_shapes_not_weights(name):
    # tf.vectorized_map under XLA made the weights compile-time constants, so every
    # meta-step after an outer update compiled anew (keras_meta/ops/vectorize.py).
    learner, _ = trained(name, "xla_vectorized", steps=1)
    batch = TaskBatch(*(tf.constant(v) for v in TASKS.sample(4, seed=1)))
    step = learner._meta_gradient_fn()

    def hlo():
        return step.experimental_get_compiler_ir(batch)(stage="hlo")

    before = hlo()
    for variable in learner.meta_variables():
        variable.assign(variable + 0.5)
    assert hlo() == before


def conv_net():
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                             keras.layers.Flatten(), keras.layers.Dense(1)])


@pytest.mark.parametrize("gpu, build, requested, chosen", [
    (False, mlp, {}, (True, True)),
    (False, conv_net, {}, (False, False)),
    (False, mlp, {"jit_compile": False}, (False, True)),
    (True, mlp, {}, (True, True)),
    (True, conv_net, {}, (True, False)),
    (True, mlp, {"vectorize": False}, (True, False)),
])
def test_auto_execution_choice(monkeypatch, gpu, build, requested, chosen):
    devices = [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if gpu else []
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: devices if kind == "GPU" else [])
    learner = km.MAML(build())
    learner.compile(**requested)
    learner._resolve_execution()
    assert (learner.jit, learner.vectorize) == chosen


@pytest.mark.parametrize("name", LEARNERS)
def test_fit_lowers_query_loss_and_counts_steps(name):
    learner = LEARNERS[name](mlp())
    learner.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = learner.evaluate(km.tasks.Sinusoid(shots=5, split="test"), steps=[1],
                              num_batches=2)[1]["loss"]
    history = learner.fit(TASKS, meta_batch_size=8, epochs=2, steps_per_epoch=40, verbose=0,
                          validation_tasks=km.tasks.Sinusoid(shots=5, split="val"))
    after = learner.evaluate(km.tasks.Sinusoid(shots=5, split="test"), steps=[1],
                             num_batches=2)[1]["loss"]
    assert isinstance(history, keras.callbacks.History)
    assert set(history.history) == {"loss", "val_loss"}
    assert len(history.history["loss"]) == 2
    assert int(learner.task_step.numpy()) == 80
    assert after < before


@pytest.mark.parametrize("name", LEARNERS)
def test_user_defined_family(name):
    learner, history = trained(name, tasks=Lines(), steps=5)
    assert np.isfinite(history.history["loss"]).all()
    assert int(learner.task_step.numpy()) == 5


def test_same_seed_same_run_different_seed_different_run():
    a, ha = trained("maml", seed=7)
    b, hb = trained("maml", seed=7)
    c, hc = trained("maml", seed=8)
    assert ha.history == hb.history
    for x, y in zip(weights_of(a), weights_of(b)):
        np.testing.assert_array_equal(x, y)
    assert ha.history != hc.history


def test_dataset_and_task_pool_inputs():
    pool = TASKS.sample(16, 3)
    learner, history = trained("maml", tasks=pool, loss="mse", steps=None)
    assert int(learner.task_step.numpy()) == 4  # 16 tasks / meta-batch 4
    dataset = tf.data.Dataset.from_tensors(TASKS.sample(4, 0)).repeat()
    learner = LEARNERS["maml"](mlp())
    learner.compile(loss="mse")
    learner.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)
    assert int(learner.task_step.numpy()) == 3


def test_own_input_pipelines_do_not_autotune():
    # tf.data's autotune thread could hold up the end of every fit by seconds (see
    # keras_meta.training.sources.without_autotune); user datasets keep their options.
    for tasks in (TASKS, TASKS.sample(8, 0)):
        source = sources.prepare(tasks, meta_batch_size=4, seed=0, replicas=1)[0]
        assert source.options().autotune.enabled is False
    assert sources.sampled_dataset(TASKS, 4, 2, 0).options().autotune.enabled is False
    user = tf.data.Dataset.from_tensors(TASKS.sample(4, 0)).repeat()
    assert sources.prepare(user, meta_batch_size=4, seed=0, replicas=1)[0] is user


def test_steps_per_execution_matches_single_steps():
    single, _ = trained("maml", steps=6)
    learner = LEARNERS["maml"](mlp())
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=3,
                    **MODES["function"])
    learner.fit(TASKS, meta_batch_size=4, epochs=1, steps_per_epoch=6, verbose=0)
    for a, b in zip(weights_of(learner), weights_of(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class RecordingSinusoid(km.tasks.Sinusoid):
    """Sinusoid tasks that record the size and seed of every meta-batch drawn."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seeds = []
        self.sizes = []

    def sample(self, meta_batch_size, seed):
        self.seeds.append(seed)
        self.sizes.append(meta_batch_size)
        return super().sample(meta_batch_size, seed)


@pytest.mark.parametrize("mode", ["function", "xla_vectorized"])
def test_steps_per_execution_samples_each_step_in_order(mode, monkeypatch):
    # A chunk of two meta-batches per sampling call, so that 5 steps per execution take
    # chunks of 2, 2 and 1 and the task counter is read between chunks.
    batch_bytes = 4 * (5 + 5) * 2 * 4
    monkeypatch.setattr(sources, "SAMPLE_CHUNK_BYTES", 2 * batch_bytes)
    tasks = RecordingSinusoid(shots=5, queries=5)
    learner = LEARNERS["maml"](mlp())
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=5, **MODES[mode])
    learner.fit(tasks, meta_batch_size=4, epochs=2, steps_per_epoch=5, verbose=0, seed=7)
    first_draw = 1  # fit draws step 0's batch once up front to check the tasks against the model
    assert tasks.seeds[first_draw:] == [km.tasks.step_seed(7, s) for s in range(10)]
    single = LEARNERS["maml"](mlp())
    single.compile(optimizer=keras.optimizers.Adam(1e-2), **MODES[mode])
    single.fit(TASKS, meta_batch_size=4, epochs=2, steps_per_epoch=5, verbose=0, seed=7)
    for a, b in zip(weights_of(learner), weights_of(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_second_fit_samples_with_its_own_seed_and_meta_batch_size():
    tasks = RecordingSinusoid(shots=5, queries=5)
    learner = LEARNERS["maml"](mlp())
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=2)
    learner.fit(tasks, meta_batch_size=4, epochs=1, steps_per_epoch=2, verbose=0, seed=0)
    tasks.seeds.clear()
    tasks.sizes.clear()
    learner.fit(tasks, meta_batch_size=6, epochs=1, steps_per_epoch=2, verbose=0, seed=5)
    # The up-front check draws step 0 of the new run; the steps continue the task counter.
    assert tasks.seeds == [km.tasks.step_seed(5, s) for s in (0, 2, 3)]
    assert tasks.sizes == [6, 6, 6]


@pytest.mark.parametrize("name", LEARNERS)
def test_adapt_returns_adapted_copy_and_leaves_meta_weights(name):
    learner, _ = trained(name)
    before = weights_of(learner)
    batch = km.tasks.Sinusoid(shots=10, split="test").sample(1, 0)
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0], steps=5)
    for a, b in zip(weights_of(learner), before):
        np.testing.assert_array_equal(a, b)
    assert isinstance(adapted, keras.Model)
    assert adapted is not learner.model
    mse = lambda m: float(np.mean((m.predict(batch.support_x[0], verbose=0) - batch.support_y[0]) ** 2))
    assert mse(adapted) < mse(learner.model)
    # Zero steps give the meta-model back.
    zero = learner.adapt(batch.support_x[0], batch.support_y[0], steps=0)
    np.testing.assert_allclose(zero.predict(batch.query_x[0], verbose=0),
                               learner.model.predict(batch.query_x[0], verbose=0), rtol=1e-6)


def test_evaluate_reports_every_requested_step():
    learner, _ = trained("maml")
    result = learner.evaluate(km.tasks.Sinusoid(shots=5, split="test"), steps=[0, 1, 5, 10],
                              num_batches=2, meta_batch_size=5)
    assert sorted(result) == [0, 1, 5, 10]
    assert all(np.isfinite(result[s]["loss"]) for s in result)
    assert result[0]["loss"] != result[1]["loss"]


@pytest.mark.parametrize("name", LEARNERS)
def test_keras_file_round_trip(name, tmp_path):
    learner, _ = trained(name)
    restored = reloaded(learner, tmp_path)
    for a, b in zip(restored.optimizer.variables, learner.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    batch = TASKS.sample(2, 99)
    np.testing.assert_allclose(restored.predict(batch.query_x[0], verbose=0),
                               learner.predict(batch.query_x[0], verbose=0), rtol=1e-6)
    a = learner.adapt(batch.support_x[0], batch.support_y[0], steps=2)
    b = restored.adapt(batch.support_x[0], batch.support_y[0], steps=2)
    np.testing.assert_allclose(a.predict(batch.query_x[0], verbose=0),
                               b.predict(batch.query_x[0], verbose=0), rtol=1e-5, atol=1e-6)
    restored.fit(TASKS, meta_batch_size=4, steps_per_epoch=1, verbose=0)
    assert int(restored.task_step.numpy()) == 4


def test_adapted_model_exports_a_savedmodel_plain_tensorflow_serves(tmp_path):
    learner, _ = trained("maml")
    batch = km.tasks.Sinusoid(shots=10, split="test").sample(1, 0)
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0], steps=3)
    export_dir = tmp_path / "adapted"
    adapted.export(str(export_dir))
    np.save(tmp_path / "x.npy", batch.query_x[0])
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(export_dir)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "y = m.serve(tf.constant(x)).numpy()\n"
        "assert not any(k.startswith('keras_meta') for k in sys.modules)\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               adapted.predict(batch.query_x[0], verbose=0), rtol=1e-5)


def test_stock_callbacks(tmp_path):
    learner = LEARNERS["maml"](mlp())
    learner.compile()
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras")),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
    ]
    history = learner.fit(TASKS, meta_batch_size=4, epochs=2, steps_per_epoch=3, verbose=0,
                          validation_tasks=km.tasks.Sinusoid(shots=5, split="val"),
                          callbacks=callbacks)
    assert len(history.history["loss"]) == 2
    assert (tmp_path / "ckpt.keras").exists()
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))
    restored = keras.saving.load_model(tmp_path / "ckpt.keras")
    for a, b in zip(weights_of(restored), weights_of(learner)):
        np.testing.assert_array_equal(a, b)


def test_evaluate_confidence_intervals_match_a_hand_computation():
    learner, _ = trained("maml")
    tasks = km.tasks.Sinusoid(shots=5, split="test")
    result = learner.evaluate(tasks, steps=[2], meta_batch_size=4, num_batches=2, seed=3)
    losses = []
    for b in range(2):
        batch = tasks.sample(4, km.tasks.step_seed(3, b))
        for sx, sy, qx, qy in zip(*batch):
            adapted = learner.adapt(sx, sy, steps=2)
            # The meta-learner evaluates with batch statistics: training=True forward.
            losses.append(float(np.mean((adapted(qx, training=True).numpy() - qy) ** 2)))
    np.testing.assert_allclose(result[2]["loss"], np.mean(losses), rtol=1e-4)
    # Student's t with 7 degrees of freedom: t_{0.975, 7} = 2.364624 (statistical tables).
    np.testing.assert_allclose(result[2]["loss_ci95"],
                               2.364624 * np.std(losses, ddof=1) / np.sqrt(8), rtol=1e-3)
