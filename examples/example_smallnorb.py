"""smallNORB through tfds: four classification heads and an elevation regression, UW.

Needs the smallNORB download (about 250 MB from NYU): the first run calls
tfds's `download_and_prepare` for "smallnorb" into tfds's data directory
(~/tensorflow_datasets) and needs the network; later runs are offline. Images
are resized to 48x48; a few minutes per epoch on a CPU:

    python examples/example_smallnorb.py
"""

import keras

import keras_mtl
from keras_mtl import datasets

data = datasets.load_smallnorb(image_size=(48, 48))
train = data.train.shuffle(10000, seed=0).batch(128)
test = data.test.batch(512)

keras.utils.set_random_seed(0)
inputs = keras.Input(data.input_shape)
x = inputs
for filters in (32, 64, 64):
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(filters, 3, activation="relu")(x))
x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x))
model = keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(x) for name, spec in data.tasks.items()})
model.compile(keras.optimizers.Adam(1e-3), loss=keras_mtl.get("uw", data.losses()), metrics=data.metrics())
history = model.fit(train, epochs=2, verbose=2, shuffle=False).history
print("task weights, last epoch:", {name: round(history[f"{name}_weight"][-1], 3) for name in data.tasks})
print({name: round(value, 4) for name, value in model.evaluate(test, verbose=0, return_dict=True).items()})
