"""`export_adaptive`: one SavedModel that adapts as the learner does, in plain TensorFlow.

Every learner is exported once (module fixture); one subprocess that never imports
keras_meta loads all the SavedModels and runs their signatures on support sets of two
sizes; each test compares one learner's outputs with its in-Python `adapt()`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta import export, export_tflite
from keras_meta.rl import policy_export

SHOTS = (5, 10)


def mlp(batch_norm=False):
    keras.utils.set_random_seed(0)
    norm = [keras.layers.BatchNormalization()] if batch_norm else []
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, activation="tanh"),
                             *norm, keras.layers.Dense(1)])


def randomize(variables, seed, low, high):
    """Learned rates and step weights far from their initial values, so using the
    initial ones (or plain SGD) shows in the predictions."""
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(rng.uniform(low, high, v.shape).astype(v.dtype))


def sinusoid_learner(make):
    def build():
        learner = make()
        learner.compile(loss="mse")
        randomize(learner.extra_meta_variables(), 1, 0.01, 0.2)
        return learner, {"steps": 1, "max_steps": MAX_STEPS,
                         "support_y_spec": tf.TensorSpec([None, 1], tf.float32)}, {
            k: km.tasks.Sinusoid(shots=k, queries=7, split="test").sample(1, k)
            for k in SHOTS}
    return build


def protonet():
    keras.utils.set_random_seed(0)
    learner = km.ProtoNet(keras.Sequential([
        keras.Input((4, 4, 1)), keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)]))
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 4, 4), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 6)
    batches = {ways * shots: km.tasks.FewShotClassification(
        images, labels, ways=ways, shots=shots, queries=3).sample(1, shots)
        for ways, shots in ((5, 1), (5, 2))}
    # Not fit: the class-id spec is given, as a learner never fit needs.
    return learner, {"support_y_spec": tf.TensorSpec([None], tf.int32)}, batches


# Step counts asked of the exported `steps` argument, up to the compiled MAX_STEPS: 0, the
# default (1), and past MAML++'s two trained steps (the last step's rates reused).
STEPS = (0, 1, 3)
MAX_STEPS = 3

LEARNERS = {
    "maml": sinusoid_learner(lambda: km.MAML(mlp(), inner_lr=0.05, inner_steps=2)),
    "fomaml": sinusoid_learner(lambda: km.FOMAML(mlp(), inner_lr=0.05)),
    "meta_sgd": sinusoid_learner(lambda: km.MetaSGD(mlp(), inner_lr=0.05)),
    "anil": sinusoid_learner(lambda: km.ANIL(mlp(), inner_lr=0.05)),
    "reptile": sinusoid_learner(lambda: km.Reptile(mlp(), inner_lr=0.05, inner_steps=2)),
    "maml_pp": sinusoid_learner(
        lambda: km.MAMLPlusPlus(mlp(batch_norm=True), inner_lr=0.05, inner_steps=2,
                                steps_per_epoch=1)),
    "protonet": protonet,
}
# The default run: a plain rule, learned per-step rates with BatchNormalization, and
# prototypes; the others under -m slow (export traces take seconds each).
DEFAULT = ("maml", "maml_pp", "protonet")

# Runs in a fresh interpreter: loads every SavedModel with TensorFlow alone.
_SERVE = """
import json, sys
import numpy as np, tensorflow as tf
root = sys.argv[1]
for name in json.loads(sys.argv[2]):
    loaded = tf.saved_model.load(f"{root}/{name}/model")
    sig = loaded.signatures
    takes_steps = "steps" in sig["adapt"].structured_input_signature[1]
    for path in json.loads(sys.argv[3]):
        data = np.load(f"{root}/{name}/{path}.npz")
        sx, sy, x = (tf.constant(data[k]) for k in ("support_x", "support_y", "x"))
        served = {"serve_meta": sig["serve_meta"](x=x)["predictions"].numpy()}
        # The loaded method with the default step count.
        state = loaded.adapt(sx, sy)
        served["default"] = loaded.serve(x, *[state[f"state_{i}"]
                                              for i in range(len(state))])["predictions"]
        for steps in json.loads(sys.argv[4]) if takes_steps else [None]:
            count = {} if steps is None else {"steps": tf.constant(steps)}
            state = sig["adapt"](support_x=sx, support_y=sy, **count)
            served[f"serve_{steps}"] = sig["serve"](x=x, **state)["predictions"]
            served[f"adapt_and_serve_{steps}"] = sig["adapt_and_serve"](
                support_x=sx, support_y=sy, x=x, **count)["predictions"]
        np.savez(f"{root}/{name}/{path}_served.npz",
                 **{k: np.asarray(v) for k, v in served.items()})
assert "keras_meta" not in sys.modules, sorted(m for m in sys.modules if "keras_meta" in m)
"""


def _export_and_serve(root, names):
    """Exports `names`, runs `_SERVE` on them; returns in-Python predictions by
    (name, shots, steps), steps None for the plain model."""
    expected = {}
    for name in names:
        learner, kwargs, batches = LEARNERS[name]()
        learner.export_adaptive(root / name / "model", **kwargs)
        for k, batch in batches.items():
            sx, sy, x = (np.asarray(v[0]) for v in batch[:3])
            np.savez(root / name / f"k{k}.npz", support_x=sx, support_y=sy, x=x)
            for steps in STEPS if "steps" in kwargs else ("default",):
                expected[name, k, steps] = learner.adapt(
                    sx, sy, steps=None if steps == "default" else steps)(x).numpy()
            # The loaded methods' default: the `steps` given to the export.
            expected[name, k, "default"] = expected[name, k, kwargs.get("steps", "default")]
            expected[name, k, None] = learner.model(x, training=False).numpy()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", _SERVE, str(root), json.dumps(list(names)),
                    json.dumps([f"k{k}" for k in SHOTS]), json.dumps(list(STEPS))],
                   check=True, env=env, cwd=root)
    return expected


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    return root, _export_and_serve(root, DEFAULT)


@pytest.fixture(scope="module")
def exported_all(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive_all")
    return root, _export_and_serve(root, [n for n in LEARNERS if n not in DEFAULT])


def _assert_served_as_in_python(root, expected, name, k):
    served = np.load(root / name / f"k{k}_served.npz")
    takes_steps = name != "protonet"
    pairs = [("default", "default")]
    for steps in STEPS if takes_steps else (None,):
        pairs += [(f"serve_{steps}", steps if takes_steps else "default"),
                  (f"adapt_and_serve_{steps}", steps if takes_steps else "default")]
    for key, steps in pairs:
        adapted = expected[name, k, steps]
        # ProtoNet's exported logits have a column per support example; its adapted
        # model keeps the classes 0..N-1 that had one (the rest get the lowest logit).
        predictions = served[key]
        np.testing.assert_allclose(predictions[:, :adapted.shape[1]], adapted,
                                   rtol=1e-6, atol=1e-6, err_msg=key)
        np.testing.assert_array_equal(predictions[:, adapted.shape[1]:],
                                      np.finfo(predictions.dtype).min)
    np.testing.assert_allclose(served["serve_meta"], expected[name, k, None], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("k", SHOTS)
@pytest.mark.parametrize("name", DEFAULT)
def test_saved_model_adapts_as_the_learner_in_plain_tensorflow(exported, name, k):
    _assert_served_as_in_python(*exported, name, k)


@pytest.mark.slow
@pytest.mark.parametrize("k", SHOTS)
@pytest.mark.parametrize("name", [n for n in LEARNERS if n not in DEFAULT])
def test_every_learner_adapts_as_in_python(exported_all, name, k):
    _assert_served_as_in_python(*exported_all, name, k)


def test_adaptation_changes_the_predictions(exported):
    # The comparison above would pass for an `adapt` that did nothing.
    root, expected = exported
    for name in ("maml", "maml_pp"):
        k = SHOTS[0]
        assert np.abs(expected[name, k, 1] - expected[name, k, 0]).max() > 1e-3, name
        assert np.abs(expected[name, k, 3] - expected[name, k, 1]).max() > 1e-3, name


def test_support_label_spec_is_what_the_tasks_give():
    spec = export.support_label_spec(km.tasks.Sinusoid(shots=3, queries=2))
    assert spec == tf.TensorSpec([None, 1], tf.float32)
    images = np.zeros((20, 4, 4), np.uint8)
    classes = km.tasks.FewShotClassification(images, np.repeat(np.arange(4), 5), ways=2,
                                             shots=1, queries=1)
    assert export.support_label_spec(classes) == tf.TensorSpec([None], tf.int32)


def test_export_refuses_missing_or_malformed_label_spec(tmp_path):
    learner = km.MAML(mlp())
    learner.compile(loss="mse")
    with pytest.raises(ValueError, match="support_y_spec"):
        learner.export_adaptive(tmp_path / "never_fit")
    with pytest.raises(TypeError, match="support_y_spec"):
        learner.export_adaptive(tmp_path / "bad", support_y_spec=np.zeros((5, 1)))
    with pytest.raises(ValueError, match="steps"):
        learner.export_adaptive(tmp_path / "bad", steps=-1,
                                support_y_spec=tf.TensorSpec([None, 1], tf.float32))
    assert not any(tmp_path.iterdir())


def test_export_refuses_bad_step_bounds(tmp_path):
    learner = km.MAML(mlp())
    learner.compile(loss="mse")
    spec = tf.TensorSpec([None, 1], tf.float32)
    with pytest.raises(ValueError, match="max_steps"):
        learner.export_adaptive(tmp_path / "bad", steps=3, max_steps=2, support_y_spec=spec)
    with pytest.raises(TypeError, match="max_steps"):
        learner.export_adaptive(tmp_path / "bad", max_steps=2.0, support_y_spec=spec)
    with pytest.raises(ValueError, match="format"):
        learner.export_adaptive(tmp_path / "bad", support_y_spec=spec, format="onnx")
    protonet_learner = protonet()[0]
    with pytest.raises(ValueError, match="max_steps"):
        protonet_learner.export_adaptive(tmp_path / "bad", max_steps=2,
                                         support_y_spec=tf.TensorSpec([None], tf.int32))
    assert not any(tmp_path.iterdir())


def test_saved_model_refuses_steps_past_the_bound(exported):
    root, _ = exported
    loaded = tf.saved_model.load(str(root / "maml" / "model"))
    data = np.load(root / "maml" / f"k{SHOTS[0]}.npz")
    with pytest.raises(tf.errors.InvalidArgumentError, match="steps"):
        loaded.adapt(tf.constant(data["support_x"]), tf.constant(data["support_y"]),
                     tf.constant(MAX_STEPS + 1))


def test_moved_exports_stay_public_here():
    # `keras_meta.export.to_tflite` (README, benchmarks) and `export_adaptive_policy`
    # predate their own modules.
    assert export.to_tflite is export_tflite.to_tflite
    assert export.export_adaptive_policy is policy_export.export_adaptive_policy
    assert {"to_tflite", "export_adaptive_policy"} <= set(export.__all__)
    assert all(hasattr(export, name) for name in export.__all__)
