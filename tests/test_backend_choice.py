"""A backend keras_mtl does not train on is refused at compile, with the supported ones named."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import keras, keras_mtl
inputs = keras.Input((3,))
hidden = keras.layers.Dense(4)(inputs)
model = keras_mtl.MultiTaskModel(inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)})
model.compile("sgd", loss=keras_mtl.get("uw", {"a": "mse", "b": "mse"}))
"""


@pytest.mark.parametrize("backend", ["numpy"])
def test_an_unsupported_backend_is_refused_at_compile(backend):
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert f"keras_mtl trains on the tensorflow, jax and torch backends; Keras runs on '{backend}'" in result.stderr


PLAIN_MODEL = """
import keras, keras_mtl
inputs = keras.Input((3,))
hidden = keras.layers.Dense(4)(inputs)
model = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)})
model.compile("sgd", loss=keras_mtl.get("uw", {"a": "mse", "b": "mse"}), loss_weights=[1.0, 0.2])
model.fit(keras.ops.zeros((4, 3)), {"a": keras.ops.zeros((4, 1)), "b": keras.ops.zeros((4, 1))}, verbose=0)
"""


@pytest.mark.parametrize("backend", ["torch"])  # numpy has no fit
def test_keras_mtl_imports_and_a_plain_model_gets_its_error_on_other_backends(backend):
    """keras_mtl's methods are Keras tree nodes on every backend's tree (the refusal of a plain keras.Model)."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_MODEL], env=environment, capture_output=True, text=True, timeout=300
    )
    assert "Mix keras_mtl.MultiTaskMixin into your model" in result.stderr, result.stderr[-2000:]
