"""QM9 offline: an MLP on Coulomb-matrix eigenvalues, 11 regression heads.

Needs the QM9 CSVs of the `qm9pack` package (a 104 MB wheel, no download at
run time): `pip install -e ".[qm9]"` (or `pip install qm9pack==1.0.3`).
The 11 targets are standardised; their raw scales differ by about 10^4.
About a minute on a 2-core CPU:

    python examples/example_qm9.py

The benchmark on QM9, with single-task baselines and Δm%:
`keras-mtl benchmark --dataset qm9pack --batch-size 256 --epochs 3`.
"""

import keras

import keras_mtl
from keras_mtl import datasets

data = datasets.load_qm9pack()
train = data.train.shuffle(10000, seed=0).batch(256)
test = data.test.batch(1024)

for method_id in ["ew", "uw_so"]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.input_shape)
    x = keras.layers.Normalization()
    x.adapt(data.train.map(lambda features, targets: features).batch(4096))
    x = keras.layers.Dense(256, activation="relu")(x(inputs))
    x = keras.layers.Dense(256, activation="relu")(x)
    model = keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(x) for name, spec in data.tasks.items()})
    model.compile(keras.optimizers.Adam(1e-3), loss=keras_mtl.get(method_id, data.losses()), metrics=data.metrics())
    model.fit(train, epochs=3, verbose=0, shuffle=False)
    results = model.evaluate(test, verbose=0, return_dict=True)
    # Mean absolute errors in each target's own units.
    errors = {t: round(results[f"{t}_mean_absolute_error"] * spec.target_std, 4) for t, spec in data.tasks.items()}
    print(f"{method_id:6s} test MAE {errors}")
