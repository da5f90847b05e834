"""ConFIG: equal positive cosines with every task gradient, projection length; against the P-space rule in numpy."""

import keras
import numpy as np
import pytest
from agg_helpers import numpy
from agg_inputs import INPUT_NAMES, RANK_DEFICIENT, jacobian, rounded_gramian

import keras_mtl
from keras_mtl.aggregators import config_weights


def update(jac, preferences=None):
    """``d = J^T w`` (float64) from the float32 Gramian of J."""
    jac = np.asarray(jac, np.float64)
    p = np.ones(len(jac)) if preferences is None else np.asarray(preferences, np.float64)
    w = numpy(config_weights(np.float32(jac @ jac.T), p)).astype(np.float64)
    return jac.T @ w


def reference(jac, preferences=None):
    """The authors' rule in P-space: x = pinv(U) p, g_hat = x/||x||, d = (sum_k g_k . g_hat) g_hat."""
    norms = np.linalg.norm(jac, axis=1)
    units = jac / norms[:, None]
    x = np.linalg.pinv(units) @ (np.ones(len(jac)) if preferences is None else preferences)
    unit = x / np.linalg.norm(x)
    return np.sum(jac @ unit) * unit


def cosines(jac, d):
    return jac @ d / (np.linalg.norm(jac, axis=1) * np.linalg.norm(d))


def test_orthogonal_gradients_by_hand():
    # U = I: x = (1, 1), g_hat = (1, 1)/sqrt 2, length 3/sqrt 2 + 2/sqrt 2, d = (2.5, 2.5).
    jac = np.array([[3.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(update(jac), [2.5, 2.5], rtol=1e-6)


def test_120_degrees_by_hand():
    # Unit gradients at +-60 degrees from the x axis: x is along the bisector (1, 0), both cosines 1/2;
    # the length is |g_1|/2 + |g_2|/2.
    angle = np.pi / 3
    jac = np.array([[np.cos(angle), np.sin(angle)], [1000 * np.cos(angle), -1000 * np.sin(angle)]])
    np.testing.assert_allclose(update(jac), [500.5, 0.0], atol=1e-3)


@pytest.mark.parametrize("name", [n for n in INPUT_NAMES if n not in RANK_DEFICIENT])
def test_equal_positive_cosines_and_projection_length(name):
    # On the float32 Gramian the method sees (the rounding is part of the input): the cosines
    # (G w)_k / (||g_k|| ||d||) are equal and positive, and ||d|| = sum_k g_k . d / ||d||, i.e.
    # w^T G w = 1^T G w; up to what float32 weights resolve, eps32 (|G| |w|)_k.
    g = rounded_gramian(name)
    w = numpy(config_weights(np.float32(g), np.ones(len(g)))).astype(np.float64)
    norms = np.sqrt(np.diag(g))
    projections, slack = g @ w / norms, 8 * 2.0**-23 * (np.abs(g) @ np.abs(w)) / norms
    assert np.all(projections > 0), name
    assert np.all(np.abs(projections - projections.mean()) <= 1e-5 * projections.mean() + slack), name
    rounding = 8 * 2.0**-23 * (np.abs(w) + 1) @ np.abs(g) @ np.abs(w)
    assert abs(w @ g @ w - np.sum(g @ w)) <= 1e-6 * (w @ g @ w) + rounding, name


@pytest.mark.parametrize(
    "name", ["norms_1_1e2_1e4", "norm_ratio_1e6", "scale_1e-10", "scale_1e10", "k12", "duplicates"]
)
def test_matches_the_authors_rule(name):
    jac = jacobian(name)
    d = update(jac)
    np.testing.assert_allclose(d, reference(jac), rtol=1e-4, atol=1e-6 * np.linalg.norm(d))


def test_preferences_set_the_cosine_proportions():
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(3, 6)) * np.array([[1.0], [1e3], [1e-2]])
    p = np.array([1.0, 2.0, 0.5])
    cos = cosines(jac, update(jac, p))
    np.testing.assert_allclose(cos / cos[0], p, rtol=1e-5)


def test_degenerate_inputs():
    g = np.array([1.0, -2.0, 0.5])
    # Identical gradients: d is their sum (w = 1).
    np.testing.assert_allclose(update(np.stack([g, g])), 2 * g, rtol=1e-6)
    # Opposing collinear: no direction with positive cosines; zero update.
    np.testing.assert_array_equal(update(np.stack([g, -3 * g])), np.zeros(3))
    # A zero gradient is ignored.
    with_zero = np.stack([g, np.zeros(3), np.array([0.0, 1.0, 1.0])])
    np.testing.assert_allclose(update(with_zero), reference(with_zero[[0, 2]]), rtol=1e-5)
    nan = np.float32([[np.nan, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(numpy(config_weights(nan)), np.zeros(2))


def test_preferences_by_task_name_through_compile():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="trunk")(inputs)
    model = keras_mtl.MultiTaskModel(inputs, {t: keras.layers.Dense(1, name=t)(hidden) for t in ("a", "b")})
    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['c'\]"):
        model.compile("sgd", loss=keras_mtl.ConFIG({"a": "mse", "b": "mse"}, preferences={"a": 1.0, "c": 2.0}))
    with pytest.raises(ValueError, match="ConFIG: `preferences` must be .* each value a finite number > 0"):
        keras_mtl.ConFIG({"a": "mse", "b": "mse"}, preferences={"a": 1.0, "b": 0.0})
    method = keras_mtl.ConFIG({"a": "mse", "b": "mse"}, preferences={"a": 1.0, "b": 3.0})
    assert keras_mtl.ConFIG.from_config(method.get_config()).get_config() == method.get_config()
