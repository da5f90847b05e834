"""Quick start: one network, two tasks of very different loss scales, UW-SO.

The README's quick start, complete: runs offline in seconds on a CPU,

    python examples/quickstart.py

The regression loss is thousands of times larger than the classification
loss; UW-SO weighs the tasks by a softmax of their inverse losses, so the
task with the smaller loss gets the larger weight (the printed weights).
"""

import keras
import numpy as np

import keras_mtl

# 16 random features; two tasks on them: a 4-class label and a regression target of scale 100.
rng = np.random.default_rng(0)
x = rng.normal(size=(2048, 16)).astype("float32")
kinds, sizes = np.argmax(x @ rng.normal(size=(16, 4)), axis=1), 100.0 * np.sin(x[:, :1] + x[:, 1:2])

inputs = keras.Input((16,))
trunk = keras.layers.Dense(64, activation="relu")(inputs)
model = keras_mtl.MultiTaskModel(
    inputs,
    {"kind": keras.layers.Dense(4, name="kind")(trunk), "size": keras.layers.Dense(1, name="size")(trunk)},
)
model.compile(
    optimizer="adam",
    loss=keras_mtl.get("uw_so", {"kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "size": "mse"}),
)
history = model.fit(
    x, {"kind": kinds, "size": sizes}, epochs=5, verbose=2
)  # logs kind_loss, kind_weight, size_loss, ...

print("\nepoch  kind_loss  size_loss  kind_weight  size_weight")
for epoch, logs in enumerate(
    zip(*(history.history[k] for k in ("kind_loss", "size_loss", "kind_weight", "size_weight"))), start=1
):
    print(f"{epoch:5d}  {logs[0]:9.4f}  {logs[1]:9.2f}  {logs[2]:11.4f}  {logs[3]:11.4f}")
