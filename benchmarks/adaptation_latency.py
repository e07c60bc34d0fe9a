"""Adaptation latency on one task: in-Python `adapt()` vs the adaptive SavedModel vs TFLite.

MAML on the sinusoid MLP (1-40-40-1, ReLU), 10 support and 10 query points, one task at a
time, 1 and 5 inner steps; each path adapts and predicts the queries:
  python     - `learner.adapt(sx, sy, steps=k)(qx)` (compiled adapt cached per step count,
               a fresh adapted Keras model each call, as users call it);
  savedmodel - `tf.saved_model.load(dir).adapt_and_serve(sx, sy, qx, k)` (one graph of
               `max_steps` steps, `steps` a run-time argument);
  tflite     - `tf.lite.Interpreter(...).get_signature_runner("adapt_and_serve")`.
Median of `--repeats` calls after `--warmup` untimed ones; ratios against python in the
same run. Export and conversion times are printed too.

    python benchmarks/adaptation_latency.py --repeats 50
"""

import argparse
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_meta as km


def median_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=5)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, activation="relu"),
                              keras.layers.Dense(40, activation="relu"), keras.layers.Dense(1)])
    maml = km.MAML(model, inner_lr=0.01)
    maml.compile(loss="mse")
    sx, sy, qx, _ = (np.asarray(a[0]) for a in
                     km.tasks.Sinusoid(shots=10, queries=10, split="test").sample(1, 7))
    spec = tf.TensorSpec([None, 1], tf.float32)
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        maml.export_adaptive(f"{root}/saved", steps=1, max_steps=args.max_steps,
                             support_y_spec=spec)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        km.export.to_tflite(f"{root}/saved", f"{root}/model.tflite")
        convert_s = time.perf_counter() - start
        loaded = tf.saved_model.load(f"{root}/saved")
        interpreter = tf.lite.Interpreter(model_path=f"{root}/model.tflite")
        runner = interpreter.get_signature_runner("adapt_and_serve")
        print(f"MAML sinusoid MLP 1-40-40-1, 10 shots, max_steps={args.max_steps}; export "
              f"{export_s:.1f} s, TFLite conversion {convert_s:.1f} s; median of "
              f"{args.repeats} calls (ms)")
        print("| steps | python adapt() | SavedModel | TFLite | SavedModel / python | "
              "TFLite / python | max abs diff SavedModel, TFLite |")
        print("|---|---|---|---|---|---|---|")
        tensors = [tf.constant(a) for a in (sx, sy, qx)]
        for steps in (1, 5):
            count = np.array(steps, np.int32)
            python = median_ms(lambda: maml.adapt(sx, sy, steps=steps)(qx), args.warmup,
                               args.repeats)
            saved = median_ms(lambda: loaded.adapt_and_serve(*tensors, tf.constant(count)),
                              args.warmup, args.repeats)
            lite = median_ms(lambda: runner(support_x=sx, support_y=sy, x=qx, steps=count),
                             args.warmup, args.repeats)
            reference = maml.adapt(sx, sy, steps=steps)(qx).numpy()
            diffs = [np.abs(reference - np.asarray(out["predictions"])).max() for out in (
                loaded.adapt_and_serve(*tensors, tf.constant(count)),
                runner(support_x=sx, support_y=sy, x=qx, steps=count))]
            print(f"| {steps} | {python:.2f} | {saved:.2f} | {lite:.2f} | "
                  f"{saved / python:.2f} | {lite / python:.2f} | "
                  f"{diffs[0]:.1e}, {diffs[1]:.1e} |", flush=True)


if __name__ == "__main__":
    main()
