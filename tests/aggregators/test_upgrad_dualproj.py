import numpy as np
from agg_helpers import gramian, numpy, plain, random_jacobians
from scipy.optimize import minimize

from keras_mtl.aggregators import dualproj_weights, upgrad_weights

# Without XLA on TensorFlow: compiling XLA for every K is slow; the XLA path is checked in
# test_degenerate_and_compile.py.
dualproj_weights = plain(dualproj_weights)
upgrad_weights = plain(upgrad_weights)


def _box_qp(g, lower):
    return minimize(
        lambda v: v @ g @ v,
        lower + 0.1,
        jac=lambda v: 2 * g @ v,
        method="L-BFGS-B",
        bounds=[(b, None) for b in lower],
        options=dict(ftol=1e-15, gtol=1e-12),
    ).x


def test_upgrad_hand_case():
    # g1 = (1, 0), g2 = (-1, 1), G = [[1, -1], [-1, 2]].
    # i = 1: v1 = 1 at its bound, dG/dv2 = 0 -> v2 = 1/2: v = (1, 1/2) (g1 + g2/2 = (1/2, 1/2) is
    # orthogonal to g2). i = 2: v2 = 1, v1 = v2 = 1: v = (1, 1). w = mean = (1, 3/4).
    w = numpy(upgrad_weights(gramian([[1.0, 0.0], [-1.0, 1.0]])))
    np.testing.assert_allclose(w, [1.0, 0.75], atol=1e-5)


def test_dualproj_hand_case():
    # g1 = (1, 0), g2 = (-2, 1), G = [[1, -2], [-2, 5]]. At v = (1/2, 1/2), (G v)_1 < 0, so
    # v1 rises until (G v)_1 = v1 - 2 v2 = 0: v = (1, 1/2); (G v)_2 = 1/2 >= 0 keeps v2 at
    # its bound. d = g1 + g2/2 = (0, 1/2).
    w = numpy(dualproj_weights(gramian([[1.0, 0.0], [-2.0, 1.0]])))
    np.testing.assert_allclose(w, [1.0, 0.5], atol=1e-5)


def test_no_conflict_and_match_reference():
    for jac in random_jacobians()[::2]:
        num = len(jac)
        g = jac @ jac.T
        tol = 1e-4 * np.trace(g)
        up = numpy(upgrad_weights(gramian(jac))).astype(np.float64)
        dual = numpy(dualproj_weights(gramian(jac))).astype(np.float64)
        assert np.all(g @ up >= -tol) and np.all(g @ dual >= -tol)
        up_ref = np.mean([_box_qp(g, np.eye(num)[i]) for i in range(num)], axis=0)
        dual_ref = _box_qp(g, np.full(num, 1.0 / num))
        for got, ref in ((up, up_ref), (dual, dual_ref)):
            diff = got - ref
            assert np.sqrt(diff @ g @ diff) <= 1e-3 * np.sqrt(np.trace(g))
