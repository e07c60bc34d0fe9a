"""Two worker processes on the loopback interface train like one process.

Each worker builds MAML under `tf.distribute.MultiWorkerMirroredStrategy` (TF_CONFIG on
127.0.0.1) and meta-trains on a `TaskDistribution` with the in-graph sampler; each takes
half of every meta-batch. The weights must equal a single-process run of the same global
meta-batch, which worker 0 also runs (one process fewer to start).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

WORKER = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import numpy as np
    import keras_meta as km

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="tanh"),
                                  keras.layers.Dense(1)])
        learner = km.MAML(model, inner_lr=0.01, inner_steps=1)
        learner.compile(optimizer=keras.optimizers.SGD(0.01))
        return learner

    def run(learner):
        history = learner.fit(km.tasks.Sinusoid(shots=5, queries=5), meta_batch_size=8, epochs=1,
                              steps_per_epoch=3, seed=4, verbose=0)
        return {"weights": [np.asarray(v.numpy()).tolist() for v in learner.model.weights],
                "task_step": int(learner.task_step.numpy()),
                "loss": history.history["loss"][-1]}

    with strategy.scope():
        learner = build()
    result = {"replicas": learner.distribute_strategy.num_replicas_in_sync, "multi": run(learner)}
    if sys.argv[1] == "0":
        result["single"] = run(build())
    print("RESULT " + json.dumps(result))
""")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_match_one_process():
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    workers = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}))
            workers.append(subprocess.Popen([sys.executable, "-c", WORKER, str(index)], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True))
        # Bounded: a collective that never completes would otherwise wait forever.
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    results = []
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1]))
    single = results[0]["single"]
    for result in results:
        assert result["replicas"] == 2
        assert result["multi"]["task_step"] == single["task_step"] == 3
        np.testing.assert_allclose(result["multi"]["loss"], single["loss"], rtol=1e-5)
        for a, b in zip(result["multi"]["weights"], single["weights"], strict=True):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
