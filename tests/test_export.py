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
from keras_meta import export

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


def sinusoid_learner(make, steps):
    def build():
        learner = make()
        learner.compile(optimizer=keras.optimizers.SGD(0.01))
        learner.fit(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=2,
                    steps_per_epoch=1, verbose=0)
        randomize(learner.extra_meta_variables(), 1, 0.01, 0.2)
        return learner, {"steps": steps}, {
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


LEARNERS = {
    # Two steps, the default being one: the exported step count is the one asked for.
    "maml": sinusoid_learner(lambda: km.MAML(mlp(), inner_lr=0.05), steps=2),
    "meta_sgd": sinusoid_learner(lambda: km.MetaSGD(mlp(), inner_lr=0.05), steps=None),
    # Three steps past training's two reuse the last step's rates.
    "maml_pp": sinusoid_learner(
        lambda: km.MAMLPlusPlus(mlp(batch_norm=True), inner_lr=0.05, inner_steps=2,
                                steps_per_epoch=1), steps=3),
    "protonet": protonet,
}

# Runs in a fresh interpreter: loads every SavedModel with TensorFlow alone.
_SERVE = """
import json, sys
import numpy as np, tensorflow as tf
root = sys.argv[1]
for name in json.loads(sys.argv[2]):
    loaded = tf.saved_model.load(f"{root}/{name}/model")
    sig = loaded.signatures
    for path in json.loads(sys.argv[3]):
        data = np.load(f"{root}/{name}/{path}.npz")
        sx, sy, x = (tf.constant(data[k]) for k in ("support_x", "support_y", "x"))
        state = sig["adapt"](support_x=sx, support_y=sy)
        np.savez(f"{root}/{name}/{path}_served.npz",
                 serve=sig["serve"](x=x, **state)["predictions"].numpy(),
                 adapt_and_serve=sig["adapt_and_serve"](support_x=sx, support_y=sy,
                                                        x=x)["predictions"].numpy(),
                 serve_meta=sig["serve_meta"](x=x)["predictions"].numpy(),
                 methods=loaded.serve(x, *[state[f"state_{i}"]
                                           for i in range(len(state))])["predictions"].numpy())
assert "keras_meta" not in sys.modules, sorted(m for m in sys.modules if "keras_meta" in m)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    expected = {}
    for name, build in LEARNERS.items():
        learner, kwargs, batches = build()
        learner.export_adaptive(root / name / "model", **kwargs)
        steps = kwargs.get("steps")
        for k, batch in batches.items():
            sx, sy, x = (np.asarray(v[0]) for v in batch[:3])
            np.savez(root / name / f"k{k}.npz", support_x=sx, support_y=sy, x=x)
            expected[name, k] = (learner.adapt(sx, sy, steps=steps)(x).numpy(),
                                 learner.model(x, training=False).numpy())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", _SERVE, str(root), json.dumps(list(LEARNERS)),
                    json.dumps([f"k{k}" for k in SHOTS])], check=True, env=env, cwd=root)
    return root, expected


@pytest.mark.parametrize("k", SHOTS)
@pytest.mark.parametrize("name", list(LEARNERS))
def test_saved_model_adapts_as_the_learner_in_plain_tensorflow(exported, name, k):
    root, expected = exported
    adapted, meta = expected[name, k]
    served = np.load(root / name / f"k{k}_served.npz")
    for signature in ("serve", "adapt_and_serve", "methods"):
        # ProtoNet's exported logits have a column per support example; its adapted
        # model keeps the classes 0..N-1 that had one (the rest get the lowest logit).
        predictions = served[signature]
        np.testing.assert_allclose(predictions[:, :adapted.shape[1]], adapted,
                                   rtol=1e-5, atol=1e-5, err_msg=signature)
        np.testing.assert_array_equal(predictions[:, adapted.shape[1]:],
                                      np.finfo(predictions.dtype).min)
    np.testing.assert_allclose(served["serve_meta"], meta, rtol=1e-5, atol=1e-5)


def test_adaptation_changes_the_predictions(exported):
    # The comparison above would pass for an `adapt` that did nothing.
    root, expected = exported
    for name in ("maml", "meta_sgd", "maml_pp"):
        adapted, meta = expected[name, SHOTS[0]]
        assert np.abs(adapted - meta).max() > 1e-3, name


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
