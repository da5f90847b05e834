"""Gradient methods through `fit` beyond the generic per-id tests (tests/backends/test_every_method.py):
representation mode, Nash-MTL's cached weights, seeded draws."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import default_subset

import keras_mtl

sys.path.insert(0, str(Path(__file__).parent / "support"))
import dense_gradients  # noqa: E402
import three_tasks  # noqa: E402

LOSSES = {"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "c": "mae"}
GRADIENT_METHODS = [m for m in keras_mtl.available() if isinstance(keras_mtl.get(m), keras_mtl.GradientMethod)]


def _method(method_id):
    return three_tasks.method(method_id)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype("float32")
    return x, {
        "a": rng.normal(size=(48, 1)).astype("float32"),
        "b": rng.integers(0, 3, size=(48,)),
        "c": rng.normal(size=(48, 2)).astype("float32"),
    }


def _model(representation=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {name: keras.layers.Dense(units, name=name)(hidden) for name, units in (("a", 1), ("b", 3), ("c", 2))}
    return keras_mtl.MultiTaskModel(inputs, outputs, representation=representation)


def _layer_weights(model):
    return [w for name in ("trunk", "a", "b", "c") for w in model.get_layer(name).get_weights()]


def _representation_property(method_id, w, gramian, losses):
    """The defining property of a method's weights on the representation's Gramian (float64), where the test knows one."""
    norms = np.sqrt(np.diag(gramian))
    slack = 1e-5 * norms * np.sqrt(max(w @ gramian @ w, 0.0)) + 1e-6 * np.abs(gramian) @ np.abs(w)
    if method_id == "mean":
        np.testing.assert_allclose(w, np.full(3, 1 / 3), rtol=1e-6)
    elif method_id == "mgda":  # the min-norm point of the simplex: g_k·d >= ||d||² for every task
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-5
        assert np.all(gramian @ w >= w @ gramian @ w - slack)
    elif method_id == "upgrad":  # no conflict, and w = mean of v_k >= e_k, so w >= 1/K
        assert np.all(gramian @ w >= -slack) and np.all(w >= 1 / 3 - 1e-6)
    elif method_id == "gradnorm":  # the first step uses the initial weights
        np.testing.assert_array_equal(w, np.ones(3))
    elif method_id == "db_mtl":  # β = 0: every task's term w_k g_k as long as the largest ||g_j|| / L_j
        np.testing.assert_allclose(w * norms, np.full(3, np.max(norms / losses)), rtol=1e-5)


@pytest.mark.parametrize(
    "method_id", default_subset(three_tasks.representation_ids(), keep=three_tasks.DEFAULT_REPRESENTATION_IDS)
)
def test_representation_mode_steps_along_the_weighted_gradients_of_the_representation(method_id):
    # One SGD step: the trunk moves along Σ_k w_k ∇_W L_k with the logged weights (the chain rule through the
    # representation z), each head along its own task's gradient; the weights have their method's property on
    # the Gramian of the ∇_z L_k. The expectation: tests/support/dense_gradients.py, numpy float64.
    # Coordinate-wise methods (GradDrop, TrimmedMean) are no such combination: with 6 samples of 6 inputs, x is
    # invertible, so the step's direction on z is read back from the trunk's kernel and checked coordinate by coordinate.
    model = _model(representation="trunk")
    model.compile(keras.optimizers.SGD(0.05), loss=three_tasks.method(method_id, representation="trunk"))
    x, y = _data()
    x, y = x[:6], {task: value[:6] for task, value in y.items()}
    before = _layer_weights(model)
    logs = model.train_on_batch(x, y, return_dict=True)
    after = _layer_weights(model)
    gradients = dense_gradients.task_gradients(before, x, y, {"a": "mse", "b": "sce", "c": "mae"})
    losses = np.array([gradients[task]["loss"] for task in "abc"])
    np.testing.assert_allclose([logs[f"{task}_loss"] for task in "abc"], losses, rtol=1e-5)
    w = np.array([logs[f"{task}_weight"] for task in "abc"], np.float64)
    rows = np.stack([gradients[task]["representation"] for task in "abc"])
    expected = dense_gradients.sgd_step(before, gradients, w, 0.05)
    if method_id in ("graddrop", "trimmed_mean"):
        z = np.tanh(x.astype(np.float64) @ before[0] + before[1])
        pre_activation = np.linalg.solve(x.T.astype(np.float64), (before[0] - after[0]) / 0.05)
        np.testing.assert_allclose(
            after[1], before[1] - 0.05 * pre_activation.sum(0), rtol=1e-4, atol=1e-5 * np.abs(before[1]).max()
        )
        direction, scale = pre_activation / (1.0 - z**2), np.abs(rows).sum(0)
        if method_id == "trimmed_mean":  # K = 3, t = 1: the median
            np.testing.assert_allclose(direction, np.median(rows, axis=0), atol=1e-3 * scale.max())
        else:  # every coordinate keeps the components of one sign (leak 0)
            kept = np.minimum(
                np.abs(direction - np.maximum(rows, 0).sum(0)), np.abs(direction - np.minimum(rows, 0).sum(0))
            )
            assert np.all(kept <= 1e-3 * scale.max()), kept.max() / scale.max()
        expected = [before[0], before[1], *expected[2:]]
        after = [before[0], before[1], *after[2:]]
    else:
        flat = rows.reshape(3, -1)
        _representation_property(method_id, w, flat @ flat.T, losses)
    for got, want in zip(after, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


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
