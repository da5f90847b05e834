"""PyTorch runs one step at a time on one device: a `keras.distribution` is refused, naming what to use instead,
as Keras refuses `steps_per_execution` > 1, and nothing changes."""

import keras
import numpy as np
import pytest
from conftest import compiled_toy_model, toy_data

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the PyTorch engine")


@pytest.fixture
def data_parallel():
    # Keras 3.15 builds a DataParallel for torch from named devices (it cannot list them there), and then ignores it.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=["cpu:0", "cpu:1"]))
    try:
        yield
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.parametrize("method_id", ["uw", "pcgrad"])
def test_a_distribution_is_refused_and_nothing_changes(data_parallel, method_id):
    model = compiled_toy_model(method_id)
    x, y = toy_data()
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(
        ValueError,
        match="keras_mtl trains on one device on PyTorch: Keras 3.15 has no distribution for the torch backend",
    ):
        model.fit(x, y, batch_size=20, epochs=1, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(new, old)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_steps_per_execution_above_one_is_refused_by_keras_and_nothing_changes():
    model = compiled_toy_model("mgda", steps_per_execution=4)
    x, y = toy_data()
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(ValueError, match="`steps_per_execution` must be 1 with the PyTorch backend"):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(new, old)
