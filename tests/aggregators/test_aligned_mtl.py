import numpy as np
from agg_helpers import gramian, numpy, plain, random_jacobians

from keras_mtl.aggregators import aligned_mtl_weights
from keras_mtl.aggregators.aligned_mtl import _alignment_matrix

alignment_matrix = plain(_alignment_matrix)


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 2): G = diag(1, 4), sigma_min = 1, B = diag(1, 1/2):
    # aligned gradients (1, 0), (0, 1); w = B (1/2, 1/2) = (1/2, 1/4), d = (1/2, 1/2).
    w = numpy(aligned_mtl_weights(gramian([[1.0, 0.0], [0.0, 2.0]])))
    np.testing.assert_allclose(w, [0.5, 0.25], atol=1e-6)


def test_aligned_system_is_orthogonal_with_equal_norms():
    for jac in random_jacobians():
        g = gramian(jac)
        b = numpy(alignment_matrix(np.float64(g)))
        aligned = b @ jac
        sigma_min = np.linalg.svd(jac, compute_uv=False).min()
        np.testing.assert_allclose(aligned @ aligned.T, sigma_min**2 * np.eye(len(jac)), atol=2e-3 * sigma_min**2)
        # Same update as the SVD form: J = U S W^T -> aligned rows sigma_min U W^T.
        u, _, wt = np.linalg.svd(jac, full_matrices=False)
        w = numpy(aligned_mtl_weights(g))
        np.testing.assert_allclose(w @ jac, (sigma_min * u @ wt).mean(0), atol=2e-3 * sigma_min)
