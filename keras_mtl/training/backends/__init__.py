"""One training engine per Keras backend, chosen as Keras chooses its trainers.

An engine module provides `train_step(model, *args)` and `test_step(model,
*args)` in its backend trainer's signature, `compute_loss(model, y, y_pred,
sample_weight)`, `first_batch_to_build(model, iterator, data_batch)`, and
`after_batch(model, logs)`, which `fit`'s callback calls after every step, and
`output_dependencies(model)`, which `keras_mtl.training.sharing` reads at compile.
"""

import importlib

import keras

SUPPORTED = ("tensorflow", "jax", "torch")


def engine():
    """The engine module of the backend Keras runs on, or an error naming the supported ones."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED:
        raise RuntimeError(
            f"keras_mtl trains on the {', '.join(SUPPORTED[:-1])} and {SUPPORTED[-1]} backends; Keras runs on {backend!r}. "
            f"Set KERAS_BACKEND to one of them ({', '.join(SUPPORTED)}) before importing keras."
        )
    return importlib.import_module(f"keras_mtl.training.backends.{backend}")
