"""Quick start: one network, two tasks of very different loss scales, UW-SO.

Runs offline in a few seconds on a CPU:

    python examples/quickstart.py

The regression target is about 100 times larger than the classification
loss; UW-SO weighs each task by its inverse loss so that neither dominates.
"""

import keras
import numpy as np

import keras_mtl

rng = np.random.default_rng(0)
x = rng.normal(size=(4096, 16)).astype("float32")
projection = rng.normal(size=(16, 4)).astype("float32")
targets = {
    "kind": np.argmax(x @ projection, axis=1),  # 4 classes
    "size": 100.0 * np.sin(x[:, :1] + x[:, 1:2]),  # a large-scale regression
}

inputs = keras.Input((16,))
trunk = keras.layers.Dense(64, activation="relu")(inputs)
trunk = keras.layers.Dense(64, activation="relu")(trunk)
model = keras_mtl.MultiTaskModel(
    inputs,
    {"kind": keras.layers.Dense(4, name="kind")(trunk), "size": keras.layers.Dense(1, name="size")(trunk)},
)
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss=keras_mtl.get("uw_so", {"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "size": "mse"}),
    metrics={"kind": ["accuracy"]},
)
history = model.fit(x, targets, epochs=5, batch_size=64, validation_split=0.2, verbose=2)

print("\nepoch  kind_loss  size_loss  kind_weight  size_weight  val_kind_accuracy")
for epoch in range(5):
    logs = {key: values[epoch] for key, values in history.history.items()}
    print(
        f"{epoch + 1:5d}  {logs['kind_loss']:9.4f}  {logs['size_loss']:9.2f}"
        f"  {logs['kind_weight']:11.4f}  {logs['size_weight']:11.4f}  {logs['val_kind_accuracy']:17.3f}"
    )
