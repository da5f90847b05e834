import numpy as np
import tensorflow as tf
from agg_helpers import gramian, random_jacobians

from keras_mtl.aggregators import nash_mtl_weights
from keras_mtl.aggregators.nash_mtl import NASH_RIDGE

# Run in a graph, as the engine does (eager while-loops are slow).
nash_mtl_weights = tf.function(nash_mtl_weights)


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 2): G = diag(1, 4), ||G||_F = sqrt(17). Raw G a = 1/a:
    # a = (1, 1/2); normalised: a = 17^(1/4) (1, 1/2); ||J^T a|| = sqrt(2) 17^(1/4)
    # > 1, so max_norm=1 rescales to (1, 1/2) / sqrt(2) (d = (1, 1)/sqrt(2)).
    g = gramian([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(nash_mtl_weights(g, None, normalize=False).numpy(), [1.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(nash_mtl_weights(g, None).numpy(), 17**0.25 * np.array([1.0, 0.5]), rtol=1e-5)
    np.testing.assert_allclose(nash_mtl_weights(g).numpy(), [0.5**0.5, 0.5**1.5], rtol=1e-5)


def test_solves_the_bargaining_equation():
    for jac in random_jacobians():
        g = jac @ jac.T
        alpha = nash_mtl_weights(gramian(jac), None, normalize=False).numpy().astype(np.float64)
        assert np.all(alpha > 0)
        # G a = 1/a, up to the documented ridge (relative to ||G||_F).
        residual = g @ alpha + NASH_RIDGE * np.linalg.norm(g) * alpha - 1 / alpha
        np.testing.assert_allclose(residual * alpha, 0.0, atol=1e-4)


def test_max_norm_only_rescales():
    for jac in random_jacobians():
        free = nash_mtl_weights(gramian(jac), None).numpy()
        clipped = nash_mtl_weights(gramian(jac), 0.5).numpy()
        norm = np.linalg.norm(clipped @ jac)
        assert norm <= 0.5 * (1 + 1e-5)
        np.testing.assert_allclose(clipped / clipped.sum(), free / free.sum(), rtol=1e-5)
        if np.linalg.norm(free @ jac) > 0.5:
            np.testing.assert_allclose(norm, 0.5, rtol=1e-5)
