import numpy as np
import pytest
from agg_helpers import gramian, numpy, plain, random_jacobians
from scipy.optimize import minimize

from keras_mtl.aggregators import MGDA, mgda_weights

# Without XLA on TensorFlow: compiling XLA for every K is slow; the XLA path is checked in
# test_degenerate_and_compile.py.
mgda_weights = plain(mgda_weights)

# g1 = (1, 0), g2 = (0, 2).
HAND = np.array([[1.0, 0.0], [0.0, 2.0]])


@pytest.mark.parametrize(
    "normalization, losses, expected",
    [
        # min w1^2 + 4 w2^2 on the simplex: w = (4/5, 1/5), d = (0.8, 0.4).
        ("none", None, [0.8, 0.2]),
        # unit gradients: w* = (1/2, 1/2), weights on g = w* / ||g|| = (1/2, 1/4).
        ("l2", None, [0.5, 0.25]),
        # L = (2, 1): g/L = (0.5, 0), (0, 2): w* ∝ (1/0.25, 1/4) = (16, 1)/17;
        # weights on g = w* / L = (8/17, 1/17).
        ("loss", [2.0, 1.0], [8 / 17, 1 / 17]),
        # L ||g|| = (2, 2): g/n = (0.5, 0), (0, 1): w* = (4, 1)/5, weights (0.4, 0.1).
        ("loss+", [2.0, 1.0], [0.4, 0.1]),
    ],
)
def test_hand_cases(normalization, losses, expected):
    w = numpy(mgda_weights(gramian(HAND), losses, normalization))
    np.testing.assert_allclose(w, expected, atol=1e-5)


def _min_norm(g):
    num = len(g)
    return minimize(
        lambda w: w @ g @ w,
        np.ones(num) / num,
        jac=lambda w: 2 * g @ w,
        method="SLSQP",
        bounds=[(0, 1)] * num,
        constraints=[dict(type="eq", fun=lambda w: w.sum() - 1)],
        options=dict(ftol=1e-15, maxiter=1000),
    ).x


def test_matches_brute_force_min_norm():
    for jac in random_jacobians():
        g = jac @ jac.T
        g /= np.trace(g) / len(g)  # the weights do not depend on the scale
        w = numpy(mgda_weights(np.float32(g)))
        np.testing.assert_allclose(w.sum(), 1.0, atol=1e-5)
        np.testing.assert_allclose(w, _min_norm(g), atol=1e-4)


def test_normalised_weights_apply_to_the_original_gradients():
    rng = np.random.default_rng(3)
    for jac in random_jacobians()[::3]:
        losses = rng.uniform(0.5, 2.0, size=len(jac))
        norms = np.linalg.norm(jac, axis=1)
        for normalization, divisor in (("l2", norms), ("loss", losses), ("loss+", losses * norms)):
            scaled = jac / divisor[:, None]
            w_star = _min_norm(scaled @ scaled.T)
            w = numpy(mgda_weights(gramian(jac), np.float32(losses), normalization))
            update = w_star @ scaled
            np.testing.assert_allclose(w @ jac, update, atol=2e-4 * np.abs(update).max() + 1e-5)


def test_rejects_unknown_normalization_and_missing_losses():
    with pytest.raises(ValueError):
        mgda_weights(gramian(HAND), normalization="l1")
    with pytest.raises(ValueError):
        mgda_weights(gramian(HAND), normalization="loss")


def test_norms_1_1e2_1e4_give_the_true_min_norm_point():
    # Orthogonal gradients of norms 1, 1e2, 1e4: w_k ∝ 1/||g_k||^2, so w = (1, 1e-4, 1e-8) / s with
    # s = 1 + 1e-4 + 1e-8, and ||d||^2 = 1/s (the old solver returned an update 40x longer).
    jac = np.diag([1.0, 1e2, 1e4])
    w = numpy(mgda_weights(gramian(jac))).astype(np.float64)
    total = 1 + 1e-4 + 1e-8
    np.testing.assert_allclose(w, np.array([1.0, 1e-4, 1e-8]) / total, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(w @ jac) ** 2, 1 / total, rtol=1e-6)


def test_negative_losses_never_give_a_negative_weight():
    for normalization in ("loss", "loss+"):
        assert MGDA(normalization=normalization).needs_non_negative_losses
        w = numpy(mgda_weights(gramian(HAND), np.float32([-1.0, 1.0]), normalization))
        np.testing.assert_array_equal(w, [0.0, 0.0])
    assert not MGDA(normalization="l2").needs_non_negative_losses
