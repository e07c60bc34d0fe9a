"""An adapted model predicts the way its learner evaluates it, BatchNorm included."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km

from learner_table import LEARNERS, mlp

TASKS = km.tasks.Sinusoid(shots=10, queries=10)


def trained_bn_learner(name):
    learner = LEARNERS[name](mlp(batch_norm=True))
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    learner.fit(TASKS, meta_batch_size=4, steps_per_epoch=5, verbose=0)
    return learner


@pytest.mark.parametrize("name", ["maml", "meta_sgd"])
def test_adapted_batch_norm_model_predicts_as_evaluated(name, tmp_path):
    learner = trained_bn_learner(name)
    # Moving statistics far from any task's batch statistics, as after real training.
    for variable in learner.model.non_trainable_variables:
        variable.assign(variable + 3.0)
    support_x, support_y, query_x, query_y = TASKS.sample(1, seed=11)
    adapted = learner.adapt(support_x[0], support_y[0], steps=2)
    meta = learner.meta_state()
    state = learner.adapt_states(meta, tf.constant(support_x[0]), tf.constant(support_y[0]), (2,),
                                 **learner._option_tensors(learner.adapt_options()))[0]
    evaluated = learner.predict_adapted(meta, state, tf.constant(query_x[0])).numpy()
    predicted = adapted.predict(query_x[0], batch_size=len(query_x[0]), verbose=0)
    np.testing.assert_allclose(predicted, evaluated, rtol=1e-4, atol=1e-4)
    # The same in plain TensorFlow, from the exported SavedModel.
    adapted.export(str(tmp_path / "adapted"), verbose=False)
    np.save(tmp_path / "x.npy", query_x[0])
    code = ("import numpy as np, tensorflow as tf, sys; "
            f"m = tf.saved_model.load({str(tmp_path / 'adapted')!r}); "
            f"print(repr(m.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r}))).numpy().tolist())); "
            "assert 'keras_meta' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    np.testing.assert_allclose(np.array(eval(out.stdout.strip().splitlines()[-1])), evaluated,
                               rtol=1e-4, atol=1e-4)
    # Predicting does not move the adapted model's moving statistics.
    before = [v.numpy() for v in adapted.non_trainable_variables]
    adapted.predict(query_x[0], verbose=0)
    for a, b in zip(before, adapted.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_adapted_model_saves_and_loads(tmp_path):
    learner = trained_bn_learner("maml")
    support_x, support_y, query_x, _ = TASKS.sample(1, seed=12)
    adapted = learner.adapt(support_x[0], support_y[0])
    adapted.save(tmp_path / "adapted.keras")
    loaded = keras.saving.load_model(tmp_path / "adapted.keras")
    np.testing.assert_allclose(loaded.predict(query_x[0], verbose=0),
                               adapted.predict(query_x[0], verbose=0), rtol=1e-6)
