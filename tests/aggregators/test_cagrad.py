import numpy as np
import pytest
from agg_helpers import gramian, numpy, plain, random_jacobians
from scipy.optimize import minimize

from keras_mtl.aggregators import cagrad_weights

# Without XLA on TensorFlow: compiling XLA for every K is slow; the XLA path is checked in
# test_degenerate_and_compile.py.
cagrad_weights = plain(cagrad_weights)


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 2): g0 = (0.5, 1), ||g0||^2 = 1.25, sqrt(phi) = 0.4 sqrt(1.25).
    # With w = (1 - t, t): F(t) = 0.5 + 1.5 t + sqrt(phi) sqrt((1 - t)^2 + 4 t^2),
    # F'(0) = 1.5 - sqrt(phi) > 0, so w* = (1, 0), g_w* = g1, ||g_w*|| = 1 and
    # w = (1/2 + sqrt(phi), 1/2) / 1.16.
    jac = np.array([[1.0, 0.0], [0.0, 2.0]])
    root_phi = 0.4 * np.sqrt(1.25)
    np.testing.assert_allclose(numpy(cagrad_weights(gramian(jac))), [(0.5 + root_phi) / 1.16, 0.5 / 1.16], atol=1e-5)


def test_symmetric_hand_case():
    # Orthonormal g1, g2: by symmetry w* = (1/2, 1/2), g_w* = g0, so
    # d = (1 + c) g0 / (1 + c^2) and w = (1 + c) / (2 (1 + c^2)) each.
    w = numpy(cagrad_weights(gramian(np.eye(2)), c=0.5))
    np.testing.assert_allclose(w, [1.5 / 2.5, 1.5 / 2.5], atol=1e-5)


@pytest.mark.parametrize("c", [0.4, 1.0])
def test_the_update_is_the_papers_divided_by_one_plus_c_squared(c):
    # The authors' code's default (rescale=1); TorchJD returns the paper's unscaled weights
    # a + sqrt(phi)/||g_w*|| w* (torchjd 0.18 gives (0.9472, 0.5) on the first case at c = 0.4).
    # g1 = (1, 0), g2 = (0, 2): w* = (1, 0) while F'(0) = 1.5 - sqrt(phi) > 0 (c < 1.34), ||g_w*|| = 1.
    root_phi = c * np.sqrt(1.25)
    unscaled = np.array([0.5 + root_phi, 0.5])
    w = numpy(cagrad_weights(gramian(np.array([[1.0, 0.0], [0.0, 2.0]])), c=c)).astype(np.float64)
    np.testing.assert_allclose(w / unscaled, np.full(2, 1 / (1 + c**2)), rtol=1e-6)
    # Orthonormal g1, g2: w* = (1/2, 1/2), ||g_w*|| = sqrt(1/2) = ||g0||, so the unscaled weights are (1 + c)/2.
    w = numpy(cagrad_weights(gramian(np.eye(2)), c=c)).astype(np.float64)
    np.testing.assert_allclose(w / np.full(2, (1 + c) / 2), np.full(2, 1 / (1 + c**2)), rtol=1e-6)


def test_c_zero_gives_the_mean():
    for jac in random_jacobians()[::4]:
        num = len(jac)
        np.testing.assert_allclose(numpy(cagrad_weights(gramian(jac), c=0.0)), np.ones(num) / num, atol=1e-7)


def test_solves_the_inner_problem_like_an_independent_solver():
    # Compare the inner solution w* (recovered from the weights) with SLSQP on
    # F(w) = g_w.g0 + c ||g0|| ||g_w|| over the simplex, from every vertex and the centre.
    c = 0.4
    for jac in random_jacobians()[1::2]:
        num = len(jac)
        g = gramian(jac).astype(np.float64)
        mean = np.ones(num) / num
        root_phi = c * np.sqrt(mean @ g @ mean)
        objective = lambda w: w @ g @ mean + root_phi * np.sqrt(max(w @ g @ w, 0.0))  # noqa: E731
        reference = min(
            minimize(
                objective,
                start,
                method="SLSQP",
                bounds=[(0, 1)] * num,
                constraints=[dict(type="eq", fun=lambda w: w.sum() - 1)],
                options=dict(ftol=1e-16, maxiter=2000),
            ).fun
            for start in [mean, *np.eye(num)]
        )
        w = numpy(cagrad_weights(np.float32(g), c)).astype(np.float64)
        w_star = w * (1 + c**2) - mean
        w_star /= w_star.sum()
        assert np.all(w_star >= -1e-6)
        assert objective(w_star) <= reference + 1e-6 * abs(reference)
