"""5-way 1-shot classification on the built-in Hershey glyphs with MAML.

    python examples/few_shot_glyphs.py
"""

import keras

import keras_meta as km

data = km.datasets.glyphs()  # built once (~30 s), then cached on disk
train = km.tasks.FewShotClassification(data.images, data.labels, ways=5, shots=1, queries=5,
                                       split=data.split("background"))
test = km.tasks.FewShotClassification(data.images, data.labels, ways=5, shots=1, queries=5,
                                      split=data.split("evaluation"))

layers = [keras.Input(data.image_shape)]
for _ in range(4):
    layers += [keras.layers.Conv2D(32, 3, padding="same"), keras.layers.BatchNormalization(),
               keras.layers.ReLU(), keras.layers.MaxPooling2D(2, padding="same")]
model = keras.Sequential(layers + [keras.layers.Flatten(), keras.layers.Dense(5)])

maml = km.MAML(model, inner_lr=0.4, inner_steps=1)
maml.compile()  # Adam(1e-3); loss and accuracy come from the task family
maml.fit(train, meta_batch_size=8, epochs=5, steps_per_epoch=100)
for steps, row in maml.evaluate(test, steps=[0, 1, 3], meta_batch_size=16).items():
    print(f"{steps} steps: accuracy {row['accuracy']:.3f}")
