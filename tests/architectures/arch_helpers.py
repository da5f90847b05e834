"""Shared helpers of the architecture tests: tiny two-task data, training, saving, gradient reach."""

import keras
import numpy as np
import tensorflow as tf

import keras_mtl
from keras_mtl.training.backends.tensorflow.losses import shared_variable_indices

TASKS = {"a": 1, "b": 1}


def regression_data(n=32, input_shape=(6,), seed=0):
    """(x, {"a": (n, 1), "b": (n, 1)}): two noisy regression targets of random inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(input_shape)).astype("float32")
    flat = x.reshape(n, -1)
    y = {
        "a": flat[:, :1] * 2.0 + 0.1 * rng.normal(size=(n, 1)),
        "b": np.sin(flat[:, 1:2]) + 0.1 * rng.normal(size=(n, 1)),
    }
    return x, {task: value.astype("float32") for task, value in y.items()}


def fit_two_epochs(model, method_id, x, y, run_eagerly=True):
    """Compiles `model` with `method_id` (mse on both tasks), fits two epochs and returns the epoch losses.

    Eagerly by default: tracing the multi-task train step of these tiny
    models costs 5-10× the four steps themselves.
    """
    model.compile(
        keras.optimizers.Adam(1e-2), loss=keras_mtl.get(method_id, {"a": "mse", "b": "mse"}), run_eagerly=run_eagerly
    )
    return model.fit(x, y, batch_size=16, epochs=2, verbose=0).history["loss"]


def assert_reloads_identically(model, x, path):
    """Saves `model` to `path` (.keras), loads it and checks it predicts exactly what `model` predicts; returns it."""
    model.save(path)
    reloaded = keras.models.load_model(path)
    expected, actual = model(x, training=False), reloaded(x, training=False)
    assert sorted(actual) == sorted(expected)
    for task in expected:
        np.testing.assert_array_equal(np.asarray(actual[task]), np.asarray(expected[task]))
    return reloaded


def per_task_gradients(model, x, y, variables=None):
    """[task][variable] gradients of each task's mse (None where the task does not reach the variable)."""
    variables = model.trainable_variables if variables is None else variables
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(x, training=True)
        losses = [tf.reduce_mean((outputs[task] - y[task]) ** 2) for task in TASKS]
    return [tape.gradient(loss, variables) for loss in losses]


def layer_of(variable):
    """The variable's path without its own name, e.g. "mmoe/expert_0/dense_3"."""
    return variable.path.rsplit("/", 1)[0]


def shared_layers(model, x, y):
    """The layers of the variables a MultiTaskModel's gradient engine treats as shared, and of the others."""
    indices = set(shared_variable_indices(model, per_task_gradients(model, x, y)))
    variables = model.trainable_variables
    shared = {layer_of(v) for i, v in enumerate(variables) if i in indices}
    return shared, {layer_of(v) for i, v in enumerate(variables) if i not in indices}


def relu(z):
    return np.maximum(z, 0.0)


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


def dense_numpy(layer, x, activation=lambda z: z):
    """activation(x W + b) in float64 from a Dense layer's weights."""
    weights = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
    out = x @ weights[0]
    return activation(out + weights[1] if len(weights) > 1 else out)


def stack_numpy(stack, x, activation=relu):
    """A `keras.Sequential` of Dense layers, each followed by `activation`, in float64."""
    for layer in stack.layers:
        x = dense_numpy(layer, x, activation)
    return x
