import numpy as np
import tensorflow as tf
from agg_helpers import SEED, gramian, random_jacobians

from keras_mtl.aggregators import gradvac_weights, pcgrad_weights


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 1), targets phi_hat = 0.5, beta = 0.5. Task 1: v = g1 and
    # phi = cos(v, g2) = 0 < 0.5, so v += ||v|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    # / (||g2|| sqrt(1 - phi_hat^2)) g2, which must bring cos(v, g2) to exactly phi_hat.
    jac = np.eye(2)
    phi_hat, phi = 0.5, 0.0
    v = jac[0].copy()
    step = np.linalg.norm(v) * (phi_hat * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - phi_hat**2)) / (
        np.linalg.norm(jac[1]) * np.sqrt(1 - phi_hat**2)
    )
    v += step * jac[1]
    np.testing.assert_allclose(v @ jac[1] / np.linalg.norm(v), phi_hat, rtol=1e-12)
    # Task 2 is the mirror image: v2 = g2 + step g1. d = v1 + v2 = (1 + step) (g1 + g2).
    # Each visited pair's target moves to (1 - beta) phi_hat + beta phi.
    ema = tf.constant([[0.0, phi_hat], [phi_hat, 0.0]])
    w, new_ema = gradvac_weights(gramian(jac), ema, SEED, beta=0.5)
    np.testing.assert_allclose(w.numpy(), [1 + step, 1 + step], rtol=1e-6)
    target = 0.5 * phi_hat + 0.5 * phi
    np.testing.assert_allclose(new_ema.numpy(), [[0.0, target], [target, 0.0]], atol=1e-7)


def test_zero_targets_reduce_to_pcgrad():
    for jac in random_jacobians():
        g = gramian(jac)
        w, _ = gradvac_weights(g, tf.zeros(g.shape), SEED, beta=0.0)
        np.testing.assert_allclose(w.numpy(), pcgrad_weights(g, SEED).numpy(), rtol=1e-4, atol=1e-5)


def test_ema_update():
    for jac in random_jacobians():
        g = gramian(jac)
        num = len(jac)
        ema = tf.constant(np.random.default_rng(num).uniform(-0.5, 0.5, (num, num)), tf.float32)
        _, kept = gradvac_weights(g, ema, SEED, beta=0.0)
        np.testing.assert_allclose(kept.numpy(), ema.numpy(), atol=1e-7)
        if num == 2:  # beta = 1: the EMA becomes the observed cosine cos(g_i, g_j)
            _, observed = gradvac_weights(g, ema, SEED, beta=1.0)
            cos = (jac[0] @ jac[1]) / np.linalg.norm(jac[0]) / np.linalg.norm(jac[1])
            np.testing.assert_allclose(observed.numpy(), [[ema[0, 0], cos], [cos, ema[1, 1]]], atol=1e-5)


def test_adjustment_reaches_the_target_for_two_tasks():
    # With K = 2 each v_i is adjusted once, so cos(v_i, g_j) ends at least at the target.
    for jac in random_jacobians()[:2]:
        ema = tf.constant([[0.0, 0.6], [0.6, 0.0]])
        w, _ = gradvac_weights(gramian(jac), ema, SEED)
        # Rebuild v_1 = g_1 + x g_2 and v_2 = g_2 + y g_1 from w = (1 + y, 1 + x).
        y, x = w.numpy() - 1.0
        for v, other in ((jac[0] + x * jac[1], jac[1]), (jac[1] + y * jac[0], jac[0])):
            assert v @ other / np.linalg.norm(v) / np.linalg.norm(other) >= 0.6 - 1e-4
