import numpy as np
import tensorflow as tf
from agg_helpers import SEED, gramian, random_jacobians
from scipy.optimize import minimize

from keras_mtl.aggregators import _common


def test_prepare_gramian_zeroes_non_finite_input():
    for bad in (np.nan, np.inf):
        g, ok = _common.prepare_gramian(tf.constant([[1.0, bad], [bad, 1.0]]))
        assert not bool(ok)
        np.testing.assert_array_equal(g.numpy(), np.zeros((2, 2)))
    assert np.all(_common.finite_or_zero(tf.constant([1.0, np.nan]), tf.constant(True)).numpy() == 0)


def test_project_weighted_simplex_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)) * 2
    for c in (np.ones(5), rng.uniform(1e-3, 1.0, size=5)):
        got = _common.project_weighted_simplex(tf.constant(x), tf.constant(c)).numpy()
        for row, projected in zip(x, got):
            ref = minimize(
                lambda w: np.sum((w - row) ** 2), c / (c @ c), jac=lambda w: 2 * (w - row), method="SLSQP",
                bounds=[(0, None)] * 5, constraints=[dict(type="eq", fun=lambda w: c @ w - 1, jac=lambda w: c)],
                options=dict(ftol=1e-15, maxiter=1000),
            ).x
            np.testing.assert_allclose(projected, ref, atol=1e-7)


def test_random_orders_are_permutations_of_the_other_tasks():
    orders = _common.random_orders(SEED, 6).numpy()
    for i, order in enumerate(orders):
        assert sorted(order) == sorted(set(range(6)) - {i})
    assert not np.all(orders == _common.random_orders(tf.constant([4, 4]), 6).numpy())


def test_box_qp_matches_scipy():
    for jac in random_jacobians()[::2]:
        num = len(jac)
        g = gramian(jac).numpy().astype(np.float64)
        lower = np.random.default_rng(num).uniform(-0.5, 1.0, size=(3, num))
        solve = tf.function(_common.solve_box_qp)
        got = solve(tf.constant(g, tf.float32), tf.constant(lower, tf.float32)).numpy()
        for low, v in zip(lower, got):
            ref = minimize(lambda x: x @ g @ x, low + 0.1, jac=lambda x: 2 * g @ x, method="L-BFGS-B",
                           bounds=[(b, None) for b in low], options=dict(ftol=1e-15, gtol=1e-12)).x
            assert np.all(v >= low - 1e-6)
            diff = v - ref
            # Compare the updates J^T v, relative to the gradient scale.
            assert np.sqrt(diff @ g @ diff) <= 1e-3 * np.sqrt(np.trace(g))
