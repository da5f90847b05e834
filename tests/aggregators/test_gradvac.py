import numpy as np
from agg_helpers import gramian, numpy, order_keys, plain, random_jacobians, run_steps

import keras_mtl
from keras_mtl.aggregators import gradvac_weights, pcgrad_weights

gradvac_weights, pcgrad_weights = plain(gradvac_weights), plain(pcgrad_weights)


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 1), targets phi_hat = 0.5, beta = 0.5. Task 1: v = g1 and
    # phi = cos(v, g2) = 0 < 0.5, so v += ||v|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    # / (||g2|| sqrt(1 - phi_hat^2)) g2, which must bring cos(v, g2) to exactly phi_hat.
    jac = np.eye(2)
    phi_hat, phi = 0.5, 0.0
    v = jac[0].copy()
    step = (
        np.linalg.norm(v)
        * (phi_hat * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - phi_hat**2))
        / (np.linalg.norm(jac[1]) * np.sqrt(1 - phi_hat**2))
    )
    v += step * jac[1]
    np.testing.assert_allclose(v @ jac[1] / np.linalg.norm(v), phi_hat, rtol=1e-12)
    # Task 2 is the mirror image: v2 = g2 + step g1. d = v1 + v2 = (1 + step) (g1 + g2).
    # Each visited pair's target moves to (1 - beta) phi_hat + beta phi.
    ema = np.float32([[0.0, phi_hat], [phi_hat, 0.0]])
    w, new_ema = gradvac_weights(gramian(jac), ema, order_keys(2), beta=0.5)
    np.testing.assert_allclose(numpy(w), [1 + step, 1 + step], rtol=1e-6)
    target = 0.5 * phi_hat + 0.5 * phi
    np.testing.assert_allclose(numpy(new_ema), [[0.0, target], [target, 0.0]], atol=1e-7)


def test_zero_targets_reduce_to_pcgrad():
    for seed, jac in enumerate(random_jacobians()):
        g, keys = gramian(jac), order_keys(len(jac), seed)
        w, _ = gradvac_weights(g, np.zeros(g.shape, np.float32), keys, beta=0.0)
        np.testing.assert_allclose(numpy(w), numpy(pcgrad_weights(g, keys)), rtol=1e-4, atol=1e-5)


def test_ema_update():
    for jac in random_jacobians():
        g = gramian(jac)
        num = len(jac)
        ema = np.random.default_rng(num).uniform(-0.5, 0.5, (num, num)).astype(np.float32)
        _, kept = gradvac_weights(g, ema, order_keys(num), beta=0.0)
        np.testing.assert_allclose(numpy(kept), ema, atol=1e-7)
        if num == 2:  # beta = 1: the EMA becomes the observed cosine cos(g_i, g_j)
            _, observed = gradvac_weights(g, ema, order_keys(num), beta=1.0)
            cos = (jac[0] @ jac[1]) / np.linalg.norm(jac[0]) / np.linalg.norm(jac[1])
            np.testing.assert_allclose(numpy(observed), [[ema[0, 0], cos], [cos, ema[1, 1]]], atol=1e-5)


def test_adjustment_reaches_the_target_for_two_tasks():
    # With K = 2 each v_i is adjusted once, so cos(v_i, g_j) ends at least at the target.
    for jac in random_jacobians()[:2]:
        ema = np.float32([[0.0, 0.6], [0.6, 0.0]])
        w, _ = gradvac_weights(gramian(jac), ema, order_keys(2))
        # Rebuild v_1 = g_1 + x g_2 and v_2 = g_2 + y g_1 from w = (1 + y, 1 + x).
        y, x = numpy(w) - 1.0
        for v, other in ((jac[0] + x * jac[1], jac[1]), (jac[1] + y * jac[0], jac[0])):
            assert v @ other / np.linalg.norm(v) / np.linalg.norm(other) >= 0.6 - 1e-4


def test_method_carries_its_targets_from_step_to_step():
    # K = 2 (one order only): step 1 from zero targets is PCGrad's; its targets become
    # beta cos(g1, g2); step 2 uses them, and they move again by the EMA.
    jac = np.array([[1.0, 0.2], [0.3, 1.0]])
    beta = 0.5
    weights, state = run_steps(keras_mtl.GradVac(beta=beta, seed=0), [jac, jac])
    assert set(state) == {"rng", "target_cosines"}
    cos = jac[0] @ jac[1] / np.linalg.norm(jac[0]) / np.linalg.norm(jac[1])
    np.testing.assert_allclose(weights[0], [1.0, 1.0], rtol=1e-6)  # no conflict, cos above 0
    expected, _ = gradvac_weights(gramian(jac), np.float32([[0, beta * cos], [beta * cos, 0]]), order_keys(2), beta)
    np.testing.assert_allclose(weights[1], numpy(expected), rtol=1e-6)
    target = (1 - beta) * beta * cos + beta * cos
    np.testing.assert_allclose(numpy(state["target_cosines"]), [[0, target], [target, 0]], rtol=1e-5)
