"""CelebA through tfds: a few binary face attributes as tasks.

Needs the CelebA download (about 1.4 GB from Google Drive, which often fails
on its quota): the first run calls tfds's `download_and_prepare` for
"celeb_a" into tfds's data directory (~/tensorflow_datasets) and needs the
network; later runs are offline. Training on a CPU is slow: this trains one
epoch on a slice of the train split.

    python examples/example_celeb_a.py
"""

import keras

import keras_mtl
from keras_mtl import datasets

ATTRIBUTES = ("Smiling", "Male", "Young", "Eyeglasses")
data = datasets.load_celeb_a(image_size=(64, 64), attributes=ATTRIBUTES)
train = data.train.take(20000).shuffle(5000, seed=0).batch(128)
test = data.test.take(5000).batch(256)

inputs = keras.Input(data.input_shape)
x = inputs
for filters in (32, 64, 64):
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(filters, 3, activation="relu")(x))
x = keras.layers.Dense(128, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
model = keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(x) for name, spec in data.tasks.items()})
model.compile(keras.optimizers.Adam(1e-3), loss=keras_mtl.get("famo", data.losses()), metrics=data.metrics())
model.fit(train, epochs=1, verbose=2, shuffle=False)
results = model.evaluate(test, verbose=0, return_dict=True)
print({task: round(results[f"{task}_binary_accuracy"], 3) for task in ATTRIBUTES})
