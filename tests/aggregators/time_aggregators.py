"""Cost per call of each Gramian weighting, compiled as the engine calls it, on the backend in use.

Run: ``.venv/bin/python tests/aggregators/time_aggregators.py`` (``KERAS_BACKEND=jax`` for JAX; not a
test: no timed assertions).
"""

import time

import keras
import numpy as np

from keras_mtl import aggregators as agg
from keras_mtl.aggregators._common import backend_function

METHODS = {
    "mgda": agg.mgda_weights,
    "upgrad": agg.upgrad_weights,
    "dualproj": agg.dualproj_weights,
    "cagrad": agg.cagrad_weights,
    "imtl_g": agg.imtl_g_weights,
    "nash_mtl": agg.nash_mtl_weights,
    "aligned_mtl": agg.aligned_mtl_weights,
    "pcgrad": lambda g: agg.pcgrad_weights(g, keras.ops.ones(g.shape) * 0.5),
    "fairgrad": lambda g: agg.fairgrad_weights(g, 2.0),
    "config": agg.config_weights,
}


def per_call_ms(fn, gramian, repeats=20):
    compiled = backend_function(fn, jit_compile=True)
    keras.ops.convert_to_numpy(compiled(gramian))  # trace and compile
    start = time.perf_counter()
    for _ in range(repeats):
        keras.ops.convert_to_numpy(compiled(gramian))
    return 1e3 * (time.perf_counter() - start) / repeats


def main():
    rng = np.random.default_rng(0)
    print(f"backend {keras.backend.backend()}")
    print("method        " + "".join(f"K={k:<8d}" for k in (2, 8, 40)))
    for name, fn in METHODS.items():
        row = []
        for num in (2, 8, 40):
            jac = rng.normal(size=(num, 64)) + 0.3
            row.append(per_call_ms(fn, (jac @ jac.T).astype(np.float32)))
        print(f"{name:<14}" + "".join(f"{ms:<10.2f}" for ms in row) + " ms/call")


if __name__ == "__main__":
    main()
