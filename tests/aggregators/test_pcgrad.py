import itertools

import numpy as np
from agg_helpers import (
    gramian,
    numpy,
    order_keys,
    orders_of,
    pcgrad_reference,
    plain,
    random_jacobians,
    run_steps,
    task_gradients,
)

import keras_mtl
from keras_mtl.aggregators import pcgrad_weights
from keras_mtl.aggregators.pcgrad import _projected_coefficients

pcgrad_weights = plain(pcgrad_weights)
projected_coefficients = plain(_projected_coefficients)


def test_hand_case():
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1, ||g1||^2 = 1, ||g2||^2 = 2.
    # v1 = g1 + (1/2) g2 = (0.5, 0.5); v2 = g2 + g1 = (0, 1); d = (0.5, 1.5)
    # = 2 g1 + 1.5 g2, so w = (1 + 1, 0.5 + 1) = (2, 1.5).
    jac = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = numpy(pcgrad_weights(gramian(jac), order_keys(2)))
    np.testing.assert_allclose(w, [2.0, 1.5], atol=1e-6)
    np.testing.assert_allclose(w @ jac, [0.5, 1.5], atol=1e-6)


def test_matches_p_space_reference_and_its_guarantees():
    for seed, jac in enumerate(random_jacobians()):
        num = len(jac)
        keys = order_keys(num, seed)
        orders = orders_of(keys)
        ref = pcgrad_reference(jac, orders)
        coeffs = numpy(projected_coefficients(np.float64(gramian(jac)), orders))
        projected = coeffs @ jac
        scale = np.linalg.norm(jac, axis=1).max()
        np.testing.assert_allclose(projected, ref, atol=1e-4 * scale)
        w = numpy(pcgrad_weights(gramian(jac), keys))
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
        np.testing.assert_array_equal(numpy(pcgrad_weights(gramian(jac), order_keys(num))), np.ones(num))


def test_the_keys_set_the_order():
    jac = np.random.default_rng(0).normal(size=(5, 8))
    g = gramian(jac)
    same = numpy(pcgrad_weights(g, order_keys(5)))
    np.testing.assert_array_equal(same, numpy(pcgrad_weights(g, order_keys(5))))
    others = [numpy(pcgrad_weights(g, order_keys(5, seed))) for seed in range(1, 6)]
    assert any(not np.allclose(same, other) for other in others)


def test_method_draws_fresh_orders_each_step_and_repeats_per_seed():
    # Conflicting gradients whose PCGrad update depends on the order: the same seed repeats the
    # sequence of weights, each step's weights are PCGrad's for some order of the others, and the
    # stream moves on between steps (5 steps all with the same order would be a stuck stream).
    jac = np.random.default_rng(4).normal(size=(4, 3))  # many distinct updates over the 6^4 orders
    steps = [jac] * 5
    first, state = run_steps(keras_mtl.PCGrad(seed=11), steps)
    again, _ = run_steps(keras_mtl.PCGrad(seed=11), steps)
    np.testing.assert_array_equal(first, again)
    assert set(state) == {"rng"}
    per_task = [list(itertools.permutations(sorted(set(range(4)) - {i}))) for i in range(4)]
    candidates = [pcgrad_reference(jac, orders).sum(0) for orders in itertools.product(*per_task)]
    for w in first:
        assert min(np.abs(w @ jac - c).max() for c in candidates) < 1e-4 * np.abs(jac).max()
    assert len({tuple(np.round(w, 4)) for w in first}) > 1


def test_evaluation_keeps_the_state():
    method = keras_mtl.PCGrad(seed=0)
    _, state = run_steps(method, [np.eye(3)])
    _, new_state = method.gradient_weights(task_gradients(np.eye(3)), state, training=False)
    assert new_state == {}
