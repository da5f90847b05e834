"""Float64 arithmetic in `keras.ops` on PyTorch, for the weightings' K x K algebra.

Keras' type promotion (`keras.backend.result_type`) maps float64 to float32
on every backend but TensorFlow, "to be aligned with JAX's default
behavior", and the torch backend's `ops.maximum`, `ops.minimum`,
`ops.divide_no_nan`, ... cast their inputs to that result: `ops.maximum(x,
0.0)` of a float64 `x` is float32 on PyTorch, silently. JAX has
`jax.enable_x64` for this; PyTorch has no switch, so `float64_promotion`
lets float64 promote to float64 while the algebra runs, as TensorFlow always
does (and as JAX does under x64).
"""

import contextlib

# Private Keras API: the promotion table of keras/src/backend/common/dtypes.py,
# read by `result_type` on every call (Keras 3.15).
from keras.src.backend.common import dtypes


@contextlib.contextmanager
def float64_promotion():
    """Within: `result_type` keeps float64 (ints and float32 promote as before)."""
    table = dtypes.BIT64_TO_BIT32_DTYPE
    previous = table.get("float64")
    table["float64"] = "float64"
    try:
        yield
    finally:
        table["float64"] = previous
