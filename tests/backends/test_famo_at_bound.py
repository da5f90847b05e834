"""FAMO with a task at exactly zero loss: the other tasks' weights fall to about ε/L, and `fit` warns once.

A compiled step cannot warn: FAMO counts such steps in its state, and the
model reads that after every epoch (`MultiTaskLoss.run_warnings`).
"""

import warnings

import keras
import numpy as np
import pytest

import keras_mtl


def model_with_a_solved_task():
    """Task a: a head with zero weights against zero targets, loss exactly 0 (its gradient is 0, so it stays so)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {
        "a": keras.layers.Dense(1, name="a", kernel_initializer="zeros")(hidden),
        "b": keras.layers.Dense(1, name="b")(hidden),
    }
    return keras_mtl.MultiTaskModel(inputs, outputs)


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, {"a": np.zeros((n, 1), "float32"), "b": (x[:, :1] * 2.0 + 1.0).astype("float32")}


def famo_warnings(caught):
    return [w for w in caught if "FAMO: the loss of 'a' reached its lower bound" in str(w.message)]


def fit(epsilon):
    model = model_with_a_solved_task()
    model.compile(keras.optimizers.SGD(0.1), loss=keras_mtl.FAMO({"a": "mse", "b": "mse"}, epsilon=epsilon))
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    return model, history, caught


def test_a_task_at_zero_loss_starves_the_other_and_fit_warns_once():
    model, history, caught = fit(epsilon=1e-8)
    assert history["a_loss"] == [0.0, 0.0]
    # w_b / w_a = (z_b/z_a) · ε / L_b: with z near uniform and L_b of order 1, about 1e-8.
    assert history["b_weight"][0] < 1e-6 and history["a_weight"][0] == pytest.approx(1.0)
    assert np.array_equal(keras.ops.convert_to_numpy(model.multi_task_state["steps_at_bound"]), [8.0, 0.0])
    assert len(famo_warnings(caught)) == 1  # two epochs, one warning


def test_a_larger_epsilon_keeps_the_other_task_learning_and_silent():
    model, history, caught = fit(epsilon=1e-2)
    assert history["b_weight"][0] > 1e-3
    assert not np.any(keras.ops.convert_to_numpy(model.multi_task_state["steps_at_bound"]))
    assert famo_warnings(caught) == []
