import numpy as np
from agg_helpers import gramian, numpy, random_jacobians

from keras_mtl.aggregators import imtl_g_weights


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 2): d = (a1, 2 a2), equal projections a1 = 2 a2 with
    # a1 + a2 = 1: a = (2/3, 1/3), d = (2/3, 2/3).
    w = numpy(imtl_g_weights(gramian([[1.0, 0.0], [0.0, 2.0]])))
    np.testing.assert_allclose(w, [2 / 3, 1 / 3], atol=1e-6)


def test_equal_projections_on_unit_gradients():
    for jac in random_jacobians():
        w = numpy(imtl_g_weights(gramian(jac))).astype(np.float64)
        np.testing.assert_allclose(w.sum(), 1.0, atol=1e-5 * np.abs(w).sum())
        units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
        projections = units @ (w @ jac)
        np.testing.assert_allclose(projections, projections.mean(), rtol=1e-3)
