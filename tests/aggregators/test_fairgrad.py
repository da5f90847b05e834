"""FairGrad: ``w > 0`` with ``(G w)_k = w_k^(-1/alpha)``, checked against numpy/scipy float64."""

import numpy as np
import pytest
from agg_helpers import numpy, plain
from agg_inputs import INPUT_NAMES, RANK_DEFICIENT, jacobian, rounded_gramian
from scipy.optimize import least_squares

import keras_mtl
from keras_mtl.aggregators import fairgrad_weights

EPS32 = 2.0**-23
_PLAIN = plain(fairgrad_weights)


def weights(g, alpha=1.0, max_norm=None):
    """The float32 weights for a float64 Gramian (rounded to float32), as float64; no XLA on TensorFlow (faster to build)."""
    return numpy(_PLAIN(np.float32(g), alpha, max_norm)).astype(np.float64)


def relative_residual(g, w, alpha):
    """Per task ``|(G w)_k - w_k^(-1/alpha)| / w_k^(-1/alpha)``, and what float32 weights can resolve of it."""
    target = w ** (-1.0 / alpha)
    return np.abs(g @ w - target) / target, 8 * EPS32 * (np.abs(g) @ np.abs(w)) / target


def test_symmetric_conflict_by_hand():
    # G = [[1, c], [c, 1]]: by symmetry w = (t, t) with (1 + c) t = t^(-1/alpha).
    c, alpha = -0.5, 2.0
    t = (1 + c) ** (-alpha / (alpha + 1))
    np.testing.assert_allclose(weights(np.array([[1.0, c], [c, 1.0]]), alpha), [t, t], rtol=1e-6)


def test_orthogonal_gradients_by_hand():
    # Diagonal G: each task alone, G_kk w_k = w_k^(-1/alpha), w_k = G_kk^(-alpha / (alpha + 1)).
    g = np.diag([1e-4, 1.0, 1e6])
    for alpha in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(weights(g, alpha), np.diag(g) ** (-alpha / (alpha + 1)), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", [n for n in INPUT_NAMES if n not in RANK_DEFICIENT])
def test_solves_the_fairness_equation(name, alpha):
    # Relative to each task's own w_k^(-1/alpha): invariant to rescaling another task.
    g = rounded_gramian(name)
    w = weights(g, alpha)
    assert np.all(w > 0), name
    residual, rounding = relative_residual(g, w, alpha)
    assert np.all(residual <= 1e-5 + rounding), (name, residual.max(), rounding.max())


def test_matches_scipy_least_squares():
    # The reference codes' solver (scipy least squares, w >= 0), run to tight tolerances in float64.
    rng = np.random.default_rng(5)
    for num in (2, 3, 5):
        jac = rng.normal(size=(num, 8)) + 0.5
        g = (jac @ jac.T).astype(np.float32).astype(np.float64)
        for alpha in (0.5, 1.0, 2.0):
            reference = least_squares(
                lambda x: g @ x - x ** (-1.0 / alpha),
                np.full(num, 1.0 / num),
                bounds=(0, np.inf),
                xtol=1e-15,
                ftol=1e-15,
                gtol=1e-15,
            ).x
            np.testing.assert_allclose(weights(g, alpha), reference, rtol=1e-5)


def test_alpha_one_is_proportional_fairness():
    # G w = 1/w: every task gets w_k (g_k . d) = 1, so w^T G w = K.
    g = rounded_gramian("norms_1_1e2_1e4")
    w = weights(g, 1.0)
    np.testing.assert_allclose(w * (g @ w), 1.0, rtol=1e-5)


def test_large_alpha_equalises_the_improvements():
    # alpha -> infinity: G w = 1, equal improvements g_k . d (here G^-1 1 > 0).
    g = np.array([[1.0, 0.1, 0.1], [0.1, 4.0, 0.2], [0.1, 0.2, 0.25]])
    expected = np.linalg.solve(g, np.ones(3))
    assert np.all(expected > 0)
    np.testing.assert_allclose(weights(g, 1e7), expected, rtol=1e-5)


def test_alpha_zero_sums_the_gradients():
    np.testing.assert_array_equal(weights(rounded_gramian("norm_ratio_1e6"), 0.0), np.ones(5))


def test_scaling_every_gradient():
    # G -> c^2 G scales w by c^(-2 alpha / (alpha + 1)).
    jac = jacobian("conflicting_ratio_1e6") / 1e3
    alpha, c = 2.0, 1e-4
    base = weights(jac @ jac.T, alpha)
    np.testing.assert_allclose(weights(c**2 * (jac @ jac.T), alpha), base * c ** (-2 * alpha / (alpha + 1)), rtol=1e-5)


def test_zero_gradient_gets_zero_weight_and_the_others_solve_their_own_equation():
    jac = jacobian("zero_row")
    g = jac @ jac.T
    w = weights(g, 2.0)
    assert w[2] == 0
    sub = g[:2, :2].astype(np.float32).astype(np.float64)
    residual, rounding = relative_residual(sub, w[:2], 2.0)
    assert np.all(residual <= 1e-5 + rounding)


def test_degenerate_inputs():
    # Opposing collinear gradients: no solution; lifted, the update nearly cancels (d ~ 0 next to the weights).
    jac = np.array([[1.0, 2.0], [-3.0, -6.0]])
    w = weights(jac @ jac.T)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    assert np.linalg.norm(jac.T @ w) < 1e-2 * np.linalg.norm(w * np.linalg.norm(jac, axis=1))
    np.testing.assert_array_equal(weights(np.zeros((3, 3))), np.zeros(3))
    np.testing.assert_array_equal(weights(np.array([[np.nan, 0.0], [0.0, 1.0]])), np.zeros(2))


def test_max_norm_clips_the_update_only():
    g = rounded_gramian("conflict_120_x1000")
    free, clipped = weights(g, 2.0), weights(g, 2.0, max_norm=0.5)
    np.testing.assert_allclose(np.sqrt(clipped @ g @ clipped), 0.5, rtol=1e-5)
    np.testing.assert_allclose(clipped / free, np.full(2, clipped[0] / free[0]), rtol=1e-6)


def test_xla_matches_the_graph():
    g = rounded_gramian("cond_1e8_rows")
    xla = numpy(fairgrad_weights(np.float32(g), 2.0))
    np.testing.assert_allclose(xla, weights(g, 2.0), rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="FairGrad: `alpha` must be a finite number ≥ 0"):
        keras_mtl.FairGrad({"a": "mse"}, alpha=-1.0)
    with pytest.raises(ValueError, match="FairGrad: `max_norm` must be a finite number > 0"):
        keras_mtl.FairGrad({"a": "mse"}, max_norm=0.0)
    method = keras_mtl.FairGrad({"a": "mse", "b": "mse"}, alpha=2.0, max_norm=1.0)
    assert keras_mtl.FairGrad.from_config(method.get_config()).get_config() == method.get_config()
