"""The GradNorm toy (Chen et al., 2018): two regression tasks whose scales differ 100-fold.

An unweighted sum of losses is dominated by the large task; a loss weighting
(UW-SO) or GradNorm should give the small task a larger weight. Offline, about
half a minute on a CPU:

    python examples/example_gradnorm_toy.py
"""

import keras

import keras_mtl
from keras_mtl import datasets

data = datasets.gradnorm_toy(scales=(1.0, 100.0))
train = data.train.shuffle(4000, seed=0).batch(64)
test = data.test.batch(500)

for method_id in ["ew", "uw_so", "gradnorm"]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.input_shape)
    x = keras.layers.Dense(100, activation="relu")(inputs)
    x = keras.layers.Dense(100, activation="relu")(x)
    model = keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(x) for name, spec in data.tasks.items()})
    model.compile(keras.optimizers.Adam(1e-3), loss=keras_mtl.get(method_id, data.losses()), metrics=data.metrics())
    history = model.fit(train, epochs=5, verbose=0, shuffle=False).history
    results = model.evaluate(test, verbose=0, return_dict=True)
    # Each task's error relative to its scale, so that the two are comparable.
    relative = {
        t: round(results[f"{t}_mean_absolute_error"] / s, 3) for t, s in zip(data.tasks, data.metadata["scales"])
    }
    weights = {t: round(history[f"{t}_weight"][-1], 3) for t in data.tasks}
    print(f"{method_id:9s} test MAE / scale {relative}  last epoch's mean task weights {weights}")
