"""Multi-device scaling: MAML meta-steps/s with the meta-batch split across replicas.

One process, one run: the same learner and meta-batch trained on one device and under
`tf.distribute.MirroredStrategy` over N devices (the local GPUs when there are at least
N, otherwise N logical devices carved out of the CPU, which share its cores: that
measures the strategy's overhead, not a speed-up). One meta-step per execution in both
runs: Keras 3 cannot run several under MirroredStrategy. Prints meta-steps/s per replica
count and the ratio to one device.

    python benchmarks/multi_device.py [--replicas 2] [--workloads sinusoid-1,conv-strided]
"""

import argparse
import statistics
import time

import tensorflow as tf


def _devices(replicas):
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= replicas:
        return [f"/gpu:{i}" for i in range(replicas)], "GPU"
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    return [f"/cpu:{i}" for i in range(replicas)], "logical CPU"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workloads", default="sinusoid-1,conv-strided")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    devices, kind = _devices(args.replicas)  # before anything initialises TensorFlow's devices

    import keras

    import keras_meta as km
    from meta_step import WORKLOADS, _build

    print(f"{len(devices)} x {kind} devices: {devices}")
    print(f"{'workload':<14} {'replicas':>8} {'meta-batch':>10} {'s/step':>9} {'steps/s':>8} {'vs 1':>6}")
    # One strategy object per process: a second MirroredStrategy reuses the first one's
    # collective instance keys, and their all-reduces collide.
    strategies = (tf.distribute.OneDeviceStrategy(devices[0]), tf.distribute.MirroredStrategy(devices))
    for name in args.workloads.split(","):
        cfg = dict(WORKLOADS[name])
        # Divisible by every replica count compared.
        meta_batch = cfg["meta_batch"] - cfg["meta_batch"] % len(devices)
        steps = cfg["steps"] if cfg["kind"] == "sinusoid" else 4
        baseline = None
        for strategy in strategies:
            with strategy.scope():
                model, tasks, _ = _build(cfg)
                learner = km.MAML(model, inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"])
                learner.compile(optimizer=keras.optimizers.Adam(1e-3))
            learner.fit(tasks, meta_batch_size=meta_batch, steps_per_epoch=1, verbose=0)  # trace
            times = []
            for _ in range(args.reps):
                before = int(learner.task_step.numpy())
                start = time.perf_counter()
                learner.fit(tasks, meta_batch_size=meta_batch, steps_per_epoch=steps, verbose=0)
                times.append((time.perf_counter() - start) / (int(learner.task_step.numpy()) - before))
            per_step = statistics.median(times)
            baseline = baseline or per_step
            replicas = strategy.num_replicas_in_sync
            print(f"{name:<14} {replicas:>8} {meta_batch:>10} {per_step:>9.4f} {1 / per_step:>8.2f} "
                  f"{baseline / per_step:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
