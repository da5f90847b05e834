import numpy as np
from agg_helpers import gramian, numpy, plain, random_jacobians, run_steps, task_gradients

import keras_mtl
from keras_mtl.aggregators import nash_mtl_weights

# Without XLA on TensorFlow: compiling XLA for every K is slow; the XLA path is checked in
# test_degenerate_and_compile.py.
nash_mtl_weights = plain(nash_mtl_weights)


def test_hand_case():
    # g1 = (1, 0), g2 = (0, 2): G = diag(1, 4). G a = 1/a: a1^2 = 1, 4 a2^2 = 1, so
    # a = (1, 1/2) on the raw G, as the reference code returns; on G / ||G||_F
    # (normalize=True, ||G||_F = sqrt(17)): a = 17^(1/4) (1, 1/2). ||J^T a|| =
    # sqrt(a^T G a) = sqrt(2) > 1, so max_norm=1 rescales to (1, 1/2) / sqrt(2).
    g = gramian([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(numpy(nash_mtl_weights(g, None)), [1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(
        numpy(nash_mtl_weights(g, None, normalize=True)), 17**0.25 * np.array([1.0, 0.5]), rtol=1e-6
    )
    np.testing.assert_allclose(numpy(nash_mtl_weights(g)), [0.5**0.5, 0.5**1.5], rtol=1e-6)


def _relative_residual(g, alpha):
    """|(G a)_k a_k - 1| relative to the size of the terms, float64."""
    return np.abs(g @ alpha * alpha - 1) / (np.abs(g) @ np.abs(alpha) * np.abs(alpha) + 1)


def test_solves_the_bargaining_equation_without_a_ridge():
    for jac in random_jacobians():
        g = gramian(jac).astype(np.float64)  # the float32 G the method sees
        alpha = numpy(nash_mtl_weights(np.float32(g), None)).astype(np.float64)
        assert np.all(alpha > 0)
        assert np.all(_relative_residual(g, alpha) < 1e-6)


def test_small_gradients_are_not_biased():
    # Norms 1, 1e3, 1e5 (the old ridge on G / ||G||_F was as large as task 1's G_11).
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(3, 6)) * np.array([[1.0], [1e3], [1e5]])
    jac /= np.linalg.norm(jac, axis=1, keepdims=True) / np.array([[1.0], [1e3], [1e5]])
    g = gramian(jac).astype(np.float64)
    alpha = numpy(nash_mtl_weights(np.float32(g), None)).astype(np.float64)
    assert np.all(_relative_residual(g, alpha) < 1e-6)
    # Scaling G by t scales the raw solution by 1/sqrt(t); normalize=True undoes it.
    scaled = numpy(nash_mtl_weights(np.float32(4.0 * g), None))
    np.testing.assert_allclose(scaled, alpha / 2, rtol=1e-6)


def test_singular_gramians_give_the_documented_weights():
    # A zero gradient gets weight 0; the other solves its own equation a^2 ||g||^2 = 1.
    zero = numpy(nash_mtl_weights(gramian([[3.0, 4.0], [0.0, 0.0]]), None))
    np.testing.assert_allclose(zero, [0.2, 0.0], rtol=1e-6)
    # Opposing collinear gradients (0 in the hull): no solution; G_s is lifted to its
    # float32 resolution, the weights are equal (per unit gradient) and d = 0.
    jac = np.array([[1.0, 2.0], [-2.0, -4.0]])
    alpha = numpy(nash_mtl_weights(gramian(jac), None))
    assert np.all(alpha > 0)
    np.testing.assert_allclose(alpha[0], 2 * alpha[1], rtol=1e-5)
    np.testing.assert_allclose(alpha @ jac, 0.0, atol=1e-5 * np.abs(alpha[0]))
    # Identical gradients: (G a)_k = ||g||^2 (a1 + a2) = 1/a_k, a_k = 1 / (||g|| sqrt(2)).
    same = numpy(nash_mtl_weights(gramian([[3.0, 4.0], [3.0, 4.0]]), None))
    np.testing.assert_allclose(same, [0.2 / 2**0.5] * 2, rtol=1e-5)


def test_max_norm_only_rescales():
    for jac in random_jacobians():
        free = numpy(nash_mtl_weights(gramian(jac), None))
        clipped = numpy(nash_mtl_weights(gramian(jac), 0.5))
        norm = np.linalg.norm(clipped @ jac)
        assert norm <= 0.5 * (1 + 1e-5)
        np.testing.assert_allclose(clipped / clipped.sum(), free / free.sum(), rtol=1e-5)
        if np.linalg.norm(free @ jac) > 0.5:
            np.testing.assert_allclose(norm, 0.5, rtol=1e-5)


def test_method_reuses_its_weights_between_updates():
    # update_weights_every = 2: steps 1 and 3 solve on their own Gramian, steps 2 and 4 reuse the
    # previous weights; the step counter and the weights are the state; evaluation changes nothing.
    jacobians = [np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[3.0, 0.0], [0.0, 1.0]])] * 2
    method = keras_mtl.NashMTL(max_norm=None, update_weights_every=2)
    weights, state = run_steps(method, jacobians)
    solved = [numpy(nash_mtl_weights(gramian(jac), None)) for jac in jacobians]
    np.testing.assert_allclose(weights, [solved[0], solved[0], solved[2], solved[2]], rtol=1e-6)
    np.testing.assert_allclose(solved[0], [1.0, 0.5], rtol=1e-6)  # G = diag(1, 4): a_k = 1/||g_k||
    assert int(numpy(state["steps"])) == 4
    np.testing.assert_allclose(numpy(state["nash_weights"]), solved[2], rtol=1e-6)
    evaluated, unchanged = method.gradient_weights(task_gradients(jacobians[1]), state, training=False)
    assert unchanged == {}
    np.testing.assert_allclose(numpy(evaluated), solved[2], rtol=1e-6)
