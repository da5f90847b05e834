import numpy as np
import tensorflow as tf
from agg_helpers import SEED, gramian, pcgrad_reference, random_jacobians

from keras_mtl.aggregators import _common, pcgrad_weights
from keras_mtl.aggregators.pcgrad import _projected_coefficients


def test_hand_case():
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1, ||g1||^2 = 1, ||g2||^2 = 2.
    # v1 = g1 + (1/2) g2 = (0.5, 0.5); v2 = g2 + g1 = (0, 1); d = (0.5, 1.5)
    # = 2 g1 + 1.5 g2, so w = (1 + 1, 0.5 + 1) = (2, 1.5).
    jac = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = pcgrad_weights(gramian(jac), SEED).numpy()
    np.testing.assert_allclose(w, [2.0, 1.5], atol=1e-6)
    np.testing.assert_allclose(w @ jac, [0.5, 1.5], atol=1e-6)


def test_matches_p_space_reference_and_its_guarantees():
    for jac in random_jacobians():
        num = len(jac)
        orders = _common.random_orders(SEED, num).numpy()
        ref = pcgrad_reference(jac, orders)
        coeffs = _projected_coefficients(gramian(jac), tf.constant(orders)).numpy()
        projected = coeffs @ jac
        scale = np.linalg.norm(jac, axis=1).max()
        np.testing.assert_allclose(projected, ref, atol=1e-4 * scale)
        w = pcgrad_weights(gramian(jac), SEED).numpy()
        np.testing.assert_allclose(w @ jac, ref.sum(0), atol=1e-4 * scale * num)
        # What holds for any K: projection never lengthens g_i, and v_i does not
        # conflict with the task it was projected on last (for K = 2: with
        # every other task; for K > 2 earlier ones can conflict again).
        assert np.all(np.linalg.norm(projected, axis=1) <= np.linalg.norm(jac, axis=1) * (1 + 1e-5))
        last = orders[:, -1]
        assert np.all(np.einsum("ip,ip->i", projected, jac[last]) >= -1e-4 * scale**2)


def test_non_conflicting_gradients_give_the_plain_sum():
    rng = np.random.default_rng(5)
    for num in range(2, 9):
        jac = np.abs(rng.normal(size=(num, 6)))  # all inner products >= 0
        np.testing.assert_array_equal(pcgrad_weights(gramian(jac), SEED).numpy(), np.ones(num))


def test_seed_changes_the_order():
    jac = np.random.default_rng(0).normal(size=(5, 8))
    g = gramian(jac)
    same = pcgrad_weights(g, SEED).numpy()
    np.testing.assert_array_equal(same, pcgrad_weights(g, SEED).numpy())
    others = [pcgrad_weights(g, tf.constant([s, 0])).numpy() for s in range(5)]
    assert any(not np.allclose(same, other) for other in others)
