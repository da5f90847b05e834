"""Trains each given method on one device and under a 2-replica MirroredStrategy.

Run as a script (TensorFlow's logical devices must be set before anything else
touches TensorFlow, hence a separate process): prints one JSON object mapping
each method id to the largest absolute weight difference between the runs.

    python tests/support/distributed_equivalence.py ew uw_so pcgrad
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import three_tasks  # noqa: E402

import keras_mtl  # noqa: E402


def train(method_id, strategy, representation=None):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Batches of 24: each replica's 12 samples deal evenly into the 2 or 3 parts of the methods that cut batches.
    x = rng.normal(size=(72, 6)).astype("float32")
    y = {
        "a": rng.normal(size=(72, 1)).astype("float32"),
        "b": rng.integers(0, 3, size=(72,)),
        "c": rng.normal(size=(72, 2)).astype("float32"),
    }
    with strategy.scope():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="tanh", name="trunk", kernel_regularizer=keras.regularizers.L2(1e-3))(
            inputs
        )
        outputs = {name: keras.layers.Dense(units, name=name)(hidden) for name, units in (("a", 1), ("b", 3), ("c", 2))}
        model = keras_mtl.MultiTaskModel(inputs, outputs, representation=representation)
        model.compile(keras.optimizers.SGD(0.05), loss=three_tasks.method(method_id, representation))
    model.fit(x, y, batch_size=24, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


def main(method_ids):
    # One strategy for every run: collective ops of a second MirroredStrategy
    # in the same process collide with the first one's.
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    differences = {}
    for spec in method_ids:
        method_id, _, representation = spec.partition("@")
        single = train(method_id, tf.distribute.get_strategy(), representation or None)
        mirrored = train(method_id, mirrored_strategy, representation or None)
        differences[spec] = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    print(json.dumps(differences))


if __name__ == "__main__":
    main(sys.argv[1:])
