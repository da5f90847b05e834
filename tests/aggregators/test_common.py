import numpy as np
from agg_helpers import gramian, numpy, order_keys, orders_of, plain, random_jacobians
from keras import ops
from scipy.optimize import minimize

from keras_mtl.aggregators import _common


def test_prepare_gramian_zeroes_non_finite_input():
    prepare, finite_or_zero = plain(_common.prepare_gramian), plain(_common.finite_or_zero)
    for bad in (np.nan, np.inf):
        g, ok = prepare(np.float32([[1.0, bad], [bad, 1.0]]))
        assert not bool(numpy(ok))
        np.testing.assert_array_equal(numpy(g), np.zeros((2, 2)))
    assert np.all(numpy(finite_or_zero(np.float32([1.0, np.nan]), np.bool_(True))) == 0)


def test_the_algebra_stays_float64_on_every_backend():
    # Keras promotes float64 to float32 outside TensorFlow (ops.maximum(x, 0.0) of a float64 x is
    # float32 on JAX without x64 and on PyTorch); a backend function keeps it. 1 + 1e-12 is 1 in float32.
    def algebra(x):
        x = _common.as_float64(x)
        return ops.maximum(x, 0.0) + 1e-12, ops.divide_no_nan(x, x + 1.0), ops.minimum(x, 2.0)

    for compiled in (plain(algebra), _common.backend_function(algebra)):
        for value in compiled(np.float64([1.0, 3.0])):
            assert ops.dtype(value) == "float64"
        np.testing.assert_allclose(numpy(compiled(np.float64([1.0, 3.0]))[0])[0] - 1.0, 1e-12, rtol=1e-3)


def test_project_weighted_simplex_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)) * 2
    project = plain(_common.project_weighted_simplex)
    for c in (np.ones(5), rng.uniform(1e-3, 1.0, size=5)):
        got = numpy(project(x, c))
        for row, projected in zip(x, got):
            ref = minimize(
                lambda w: np.sum((w - row) ** 2),
                c / (c @ c),
                jac=lambda w: 2 * (w - row),
                method="SLSQP",
                bounds=[(0, None)] * 5,
                constraints=[dict(type="eq", fun=lambda w: c @ w - 1, jac=lambda w: c)],
                options=dict(ftol=1e-15, maxiter=1000),
            ).x
            np.testing.assert_allclose(projected, ref, atol=1e-7)


def test_random_orders_visit_the_other_tasks_by_increasing_key():
    # Keys for task 0: 0.9 (task 1), 0.1 (task 2), 0.5 (task 3): order 2, 3, 1.
    keys = np.float32([[0.3, 0.9, 0.1, 0.5], [0.2, 0.0, 0.7, 0.4], [0.6, 0.5, 0.9, 0.8], [0.99, 0.01, 0.5, 0.0]])
    expected = [[2, 3, 1], [0, 3, 2], [1, 0, 3], [1, 2, 0]]
    np.testing.assert_array_equal(numpy(plain(_common.random_orders)(keys)), expected)
    for seed in range(3):
        keys = order_keys(6, seed)
        orders = numpy(plain(_common.random_orders)(keys))
        for i, order in enumerate(orders):
            assert sorted(order) == sorted(set(range(6)) - {i})
        np.testing.assert_array_equal(orders, orders_of(keys))


def test_least_objective_takes_the_least_feasible_then_the_least_norm():
    # Problem 0: candidate 1 is infeasible; 0 and 2 tie on the objective, 2 has the smaller norm.
    # Problem 1: candidate 0 has the least objective.
    objective = np.array([[1.0, 0.0, 1.0], [0.5, 2.0, 3.0]])
    candidates = np.array([[[2.0, 0.0], [9.0, 9.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]]])
    feasible = np.array([[True, False, True], [True, True, True]])
    got = numpy(plain(_common.least_objective)(objective, candidates, feasible))
    np.testing.assert_array_equal(got, [[1.0, 0.0], [1.0, 1.0]])


def test_box_qp_matches_scipy():
    solve = plain(_common.solve_box_qp)
    for jac in random_jacobians()[::2]:
        num = len(jac)
        g = gramian(jac).astype(np.float64)
        lower = np.random.default_rng(num).uniform(-0.5, 1.0, size=(3, num))
        got = numpy(solve(np.float32(g), np.float32(lower)))
        for low, v in zip(lower, got):
            ref = minimize(
                lambda x: x @ g @ x,
                low + 0.1,
                jac=lambda x: 2 * g @ x,
                method="L-BFGS-B",
                bounds=[(b, None) for b in low],
                options=dict(ftol=1e-15, gtol=1e-12),
            ).x
            assert np.all(v >= low - 1e-6)
            diff = v - ref
            # Compare the updates J^T v, relative to the gradient scale.
            assert np.sqrt(diff @ g @ diff) <= 1e-3 * np.sqrt(np.trace(g))
