"""The meta-batch splits across replicas of MirroredStrategy with the same meta-gradient."""

import json
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_meta as km

    name, vectorize, optimizer = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    tasks = km.tasks.Sinusoid(shots=5, queries=5)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="tanh"),
                                  keras.layers.BatchNormalization(),
                                  keras.layers.Dense(1)])
        learner = getattr(km, name)(model, inner_lr=0.01, inner_steps=2)
        learner.compile(optimizer=keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": 0.01}}),
                        vectorize=vectorize)
        return learner

    def run(learner):
        learner.fit(tasks, meta_batch_size=8, epochs=1, steps_per_epoch=2, seed=4, verbose=0)
        return [v.numpy().tolist() for v in learner.weights]

    single = run(build())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        learner = build()
    assert learner.distribute_strategy.num_replicas_in_sync == 2
    multi = run(learner)
    try:
        learner.compile(steps_per_execution=2)
        refused = ""
    except ValueError as err:
        refused = str(err)
    print(json.dumps({"single": single, "multi": multi, "refused": refused}))
""")


def run(name, vectorize, optimizer="SGD"):
    out = subprocess.run([sys.executable, "-c", SCRIPT, name, "1" if vectorize else "0", optimizer],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(result):
    for a, b in zip(result["single"], result["multi"], strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6)
    return result


def test_two_replicas_give_the_single_device_meta_gradient():
    result = compare(run("MAML", vectorize=False))
    assert result["single"][0] == result["multi"][0] == 2  # task_step counts meta-steps
    # Keras 3 fails to run several steps per execution under MirroredStrategy.
    assert result["refused"] == ("Expected steps_per_execution=1 under a distribution strategy with 2 "
                                 "replicas (Keras 3 cannot run several steps per execution there). "
                                 "Received: steps_per_execution=2")


def test_two_replicas_vectorized_meta_sgd_with_adam():
    # Adam's slot variables must be created in the strategy's scope.
    compare(run("MetaSGD", vectorize=True, optimizer="Adam"))
