"""Every method id on the backend this run uses: trains through `fit`, saves, loads and continues identically.

Run on TensorFlow with the rest of the suite, and on JAX and PyTorch with
`KERAS_BACKEND=jax pytest tests/backends tests/aggregators` (and `KERAS_BACKEND=torch`).
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mtl

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402

# Representation mode for a few methods here; for every one in tests/test_cross_backend.py.
SPECS = keras_mtl.available() + [f"{i}@trunk" for i in ("mgda", "upgrad", "gradnorm")]


def trained(spec, epochs=2):
    method_id, _, representation = spec.partition("@")
    model = three_tasks.model(representation or None, three_tasks.initial_weights())
    model.compile(keras.optimizers.Adam(0.01), loss=three_tasks.method(method_id, representation))
    x, y = three_tasks.data()
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model, history


@pytest.mark.parametrize("spec", SPECS)
def test_trains_saves_loads_and_continues_identically(spec, tmp_path):
    model, history = trained(spec)
    logs = {name: values[-1] for name, values in history.history.items()}
    assert {"loss", "a_loss", "b_loss", "c_loss"} <= set(logs)
    assert all(np.isfinite(value) for value in logs.values()), logs
    assert "keras_mtl_fault" not in logs

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.multi_task_method) is type(model.multi_task_method)
    assert loaded.multi_task_method.get_config() == model.multi_task_method.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    x, y = three_tasks.data(seed=1)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
