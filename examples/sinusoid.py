"""Few-shot sinusoid regression with MAML through the Python API (DESIGN §4).

    python examples/sinusoid.py
"""

import keras

import keras_meta as km

model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, activation="relu"),
                          keras.layers.Dense(40, activation="relu"), keras.layers.Dense(1)])
tasks = km.tasks.Sinusoid(shots=10, queries=10)
maml = km.MAML(model, inner_lr=0.01, inner_steps=1, first_order=False)
maml.compile(optimizer=keras.optimizers.Adam(1e-3))
history = maml.fit(tasks, meta_batch_size=25, epochs=5, steps_per_epoch=400,
                   validation_tasks=km.tasks.Sinusoid(shots=10, queries=10, split="test"),
                   callbacks=[keras.callbacks.TerminateOnNaN()])
print("query MSE after k steps on held-out tasks:",
      maml.evaluate(km.tasks.Sinusoid(shots=10, queries=100, split="test"), steps=[0, 1, 5, 10]))

support = km.tasks.Sinusoid(shots=10, split="test").sample(1, seed=42)
adapted = maml.adapt(support.support_x[0], support.support_y[0], steps=5)  # a new keras.Model
adapted.export("runs/adapted_sinusoid")  # a SavedModel plain TensorFlow can serve
print("exported runs/adapted_sinusoid")
