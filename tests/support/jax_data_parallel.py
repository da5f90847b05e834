"""Trains each given method on one JAX device and under `keras.distribution.DataParallel` over two.

Run as a script under KERAS_BACKEND=jax (the two host devices must be requested before JAX starts);
prints one JSON object mapping each spec (`id` or `id@trunk`) to the largest absolute weight
difference between the runs.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import three_tasks  # noqa: E402


def train(spec):
    method_id, _, representation = spec.partition("@")
    keras.utils.set_random_seed(0)  # the random methods' seeds, drawn when they are built
    model = three_tasks.model(representation or None, three_tasks.initial_weights())
    model.compile(keras.optimizers.SGD(0.05), loss=three_tasks.method(method_id, representation))
    x, y = three_tasks.data()
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


def main(specs):
    assert len(jax.devices()) == 2, jax.devices()
    single = {spec: train(spec) for spec in specs}
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    differences = {}
    for spec in specs:
        parallel = train(spec)
        differences[spec] = max(float(np.max(np.abs(a - b))) for a, b in zip(single[spec], parallel))
    print(json.dumps(differences))


if __name__ == "__main__":
    main(sys.argv[1:])
