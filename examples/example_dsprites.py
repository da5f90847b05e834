"""dSprites through tfds: a shape classifier and four regression heads, Nash-MTL.

Needs the dSprites download (26 MB from GitHub): the first run calls tfds's
`download_and_prepare` for "dsprites" into tfds's data directory
(~/tensorflow_datasets) and needs the network; later runs are offline. The
heads mix a cross-entropy with mean squared errors of different scales, which
is what loss balancing is for. Trains on a slice, a few minutes on a CPU:

    python examples/example_dsprites.py
"""

import keras

import keras_mtl
from keras_mtl import datasets

data = datasets.load_dsprites()
train = data.train.take(50000).shuffle(10000, seed=0).batch(128)
test = data.test.take(5000).batch(512)

keras.utils.set_random_seed(0)
inputs = keras.Input(data.input_shape)
x = inputs
for filters in (32, 32, 64):
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(filters, 3, activation="relu")(x))
x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x))
model = keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(x) for name, spec in data.tasks.items()})
model.compile(keras.optimizers.Adam(1e-3), loss=keras_mtl.get("nash_mtl", data.losses()), metrics=data.metrics())
model.fit(train, epochs=1, verbose=2, shuffle=False)
print({name: round(value, 4) for name, value in model.evaluate(test, verbose=0, return_dict=True).items()})
