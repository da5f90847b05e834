"""Gradient methods through `fit` beyond the generic per-id tests (tests/backends/test_every_method.py):
representation mode, Nash-MTL's cached weights, seeded draws."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mtl
from conftest import default_subset

sys.path.insert(0, str(Path(__file__).parent / "support"))
import three_tasks  # noqa: E402

LOSSES = {"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "c": "mae"}
GRADIENT_METHODS = [m for m in keras_mtl.available() if isinstance(keras_mtl.get(m), keras_mtl.GradientMethod)]


def _method(method_id):
    return three_tasks.method(method_id)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype("float32")
    return x, {"a": rng.normal(size=(48, 1)).astype("float32"), "b": rng.integers(0, 3, size=(48,)), "c": rng.normal(size=(48, 2)).astype("float32")}


def _model(representation=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {name: keras.layers.Dense(units, name=name)(hidden) for name, units in (("a", 1), ("b", 3), ("c", 2))}
    return keras_mtl.MultiTaskModel(inputs, outputs, representation=representation)


@pytest.mark.parametrize("method_id", default_subset([m for m in GRADIENT_METHODS if not _method(m).parameter_mode_only], keep=three_tasks.DEFAULT_REPRESENTATION_IDS))
def test_representation_mode_trains(method_id):
    model = _model(representation="trunk")
    model.compile(keras.optimizers.SGD(0.05), loss=_method(method_id))
    history = model.fit(*_data(), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_nash_mtl_reuses_weights_between_updates():
    model = _model()
    model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.NashMTL(LOSSES, update_weights_every=3))
    x, y = _data()
    seen = []
    for start in range(0, 48, 16):
        model.train_on_batch(x[start : start + 16], {k: v[start : start + 16] for k, v in y.items()})
        seen.append(keras.ops.convert_to_numpy(model.multi_task_state["nash_weights"]).copy())
    # Computed on step 1, reused on steps 2 and 3.
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], seen[2])
    assert np.all(seen[0] > 0)


def test_random_methods_repeat_with_a_seed():
    def run(seed):
        model = _model()
        model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.PCGrad(LOSSES, seed=seed))
        model.fit(*_data(), batch_size=16, epochs=1, verbose=0, shuffle=False)
        return model.get_weights()

    first, again = run(7), run(7)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
