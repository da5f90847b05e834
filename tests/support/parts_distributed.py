"""MoDo and SDMGrad with a loss reduced by "sum" and sample weights, on one device and under a 2-replica MirroredStrategy.

Run as a script (logical devices must be set before TensorFlow starts); prints one JSON object: per
method id the largest absolute weight difference between the runs, and whether MoDo on a trunk with
batch normalisation trains to finite weights on 2 replicas. The default losses are
tests/test_distributed.py's; this checks the engine's reweighting of each replica's share of a batch
part for the other reductions (`keras_mtl.training.backends.tensorflow.parts`).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402
import three_tasks  # noqa: E402

# Small inner steps: SDMGrad's default (lr = 10) jumps between the simplex's vertices, where the
# runs' rounding differences can choose another vertex.
METHODS = {"modo": keras_mtl.MoDo, "sdmgrad": lambda losses: keras_mtl.SDMGrad(losses, lr=0.1)}


def train(method_id, strategy):
    x, y = three_tasks.data()
    weights = {task: np.random.default_rng(1).uniform(0.5, 2.0, size=len(x)).astype("float32") for task in y}
    losses = {"a": keras.losses.MeanSquaredError(reduction="sum"), "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "c": "mae"}
    with strategy.scope():
        model = three_tasks.model(weights=three_tasks.initial_weights())
        model.compile(keras.optimizers.SGD(0.01), loss=METHODS[method_id](losses))
    model.fit(x, y, sample_weight=weights, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return model.get_weights()


def batch_norm_stays_finite(strategy):
    """MoDo on a trunk with batch normalisation: a replica holds none of some parts (its statistics over no sample would be NaN)."""
    x, y = three_tasks.data()
    with strategy.scope():
        inputs = keras.Input((6,))
        hidden = keras.layers.Activation("tanh")(keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs)))
        model = keras_mtl.MultiTaskModel(inputs, {name: keras.layers.Dense(units, name=name)(hidden) for name, units in (("a", 1), ("b", 3), ("c", 2))})
        model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.MoDo(three_tasks.task_losses()))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return all(bool(np.all(np.isfinite(w))) for w in model.get_weights())


if __name__ == "__main__":
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    differences = {}
    for method_id in METHODS:
        single, split = train(method_id, tf.distribute.get_strategy()), train(method_id, mirrored)
        differences[method_id] = max(float(np.max(np.abs(a - b))) for a, b in zip(single, split))
    print(json.dumps({"differences": differences, "batch_norm_finite": batch_norm_stays_finite(mirrored)}))
