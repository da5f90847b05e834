"""The property suite: every Gramian method on the shared inputs of ``agg_inputs``.

For each method its defining property, checked with scale-free tolerances (relative to each
task's own gradient norm), an independent float64 scipy reference for the problems it solves
(the method must be at least as good, to 1e-6 relative), permutation invariance and positive
homogeneity. The methods run without XLA on TensorFlow (a plain graph, ``agg_helpers.plain``), the
XLA path being checked against it in test_degenerate_and_compile.py, and compiled on JAX;
everything is computed on the float32 Gramian the engine passes (see ``agg_inputs``).
"""

import functools

import numpy as np
import pytest
from agg_helpers import numpy, plain
from agg_inputs import INPUT_NAMES, ISSUE_CASES, RANK_DEFICIENT, jacobian, rounded_gramian
from scipy.optimize import minimize, nnls

from keras_mtl import aggregators as agg
from keras_mtl.aggregators.aligned_mtl import _alignment_matrix

EPS32 = 2.0**-23
C = 0.4
METHODS = {
    "mgda": agg.mgda_weights,
    "upgrad": agg.upgrad_weights,
    "dualproj": agg.dualproj_weights,
    "cagrad": agg.cagrad_weights,
    "imtl_g": agg.imtl_g_weights,
    "nash_mtl": functools.partial(agg.nash_mtl_weights.python_function, max_norm=None),
    "aligned_mtl": agg.aligned_mtl_weights,
}
_PLAIN = {name: plain(fn) for name, fn in METHODS.items()}
solve_box_qp = plain(agg._common.solve_box_qp)
alignment_matrix = plain(_alignment_matrix)


def weights(method, g):
    """The method's float32 weights for a float64 Gramian (rounded to float32 first), as float64."""
    return numpy(_PLAIN[method](np.float32(g))).astype(np.float64)


def _scaling(g):
    norms = np.sqrt(np.diag(g))
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return g * inverse[:, None] * inverse[None, :], norms, inverse


def _rounding_slack(g, w):
    """What float32 weights can get right in (G w)_k: eps32 sum_j |G_kj w_j|, a few times."""
    return 8 * EPS32 * np.abs(g) @ np.abs(w)


# ----------------------------------------------------------------- references (scipy, float64)


def _slsqp(objective, start, bounds, constraints=()):
    result = minimize(
        objective, start, method="SLSQP", bounds=bounds, constraints=constraints, options=dict(ftol=1e-16, maxiter=2000)
    )
    return result.x


def _simplex_reference(g):
    """min w^T G w on the simplex, solved by SLSQP in u = w / c (c = s / max s) on G_s."""
    scaled, _, inverse = _scaling(g)
    if np.any(inverse == 0):
        return 0.0
    c = inverse / inverse.max()
    plane = dict(type="eq", fun=lambda u: c @ u - 1, jac=lambda u: c)
    u = _slsqp(lambda u: u @ scaled @ u, c / (c @ c), [(0, None)] * len(g), [plane])
    w = np.maximum(u, 0) * c
    return w @ g @ w / w.sum() ** 2


def _box_reference(g, lower):
    """min v^T G v over v >= lower, by L-BFGS-B on the Jacobi-scaled problem."""
    scaled, norms, _ = _scaling(g)
    bounds = lower * norms
    size = np.abs(bounds).max()
    if size == 0:
        return 0.0  # the bound is on a zero gradient only
    result = minimize(
        lambda u: u @ scaled @ u,
        bounds / size + 0.1,
        jac=lambda u: 2 * scaled @ u,
        method="L-BFGS-B",
        bounds=[(b, None) for b in bounds / size],
        options=dict(ftol=1e-16, gtol=1e-14, maxiter=20000),
    )
    u = result.x * size
    return u @ scaled @ u


def _box_projection(g, lower):
    """argmin v^T G v over v >= lower, float64, exactly: Lawson-Hanson NNLS (scipy) on the Jacobi-scaled problem.

    With u = D v (D = diag of the gradient norms), u = D lower + z, z >= 0, and
    G_s = D^-1 G D^-1 = A^T A (A = Lambda^1/2 V^T from its eigh, negative
    eigenvalues of the rounded G clipped): min ||A z + A D lower||. A zero
    gradient's entry stays at its bound (it does not change the update).
    """
    scaled, norms, _ = _scaling(g)
    eigenvalues, vectors = np.linalg.eigh(scaled)
    factor = np.sqrt(np.maximum(eigenvalues, 0.0))[:, None] * vectors.T
    start = lower * norms
    z, _ = nnls(factor, -factor @ start, maxiter=50 * len(g))
    u = start + z
    return np.where(norms > 0, np.divide(u, norms, out=np.zeros_like(u), where=norms > 0), lower)


def _cagrad_objective(g, w):
    mean = np.full(len(g), 1.0 / len(g))
    return w @ g @ mean + C * np.sqrt(mean @ g @ mean) * np.sqrt(max(w @ g @ w, 0.0))


def _cagrad_reference(g):
    """The inner problem min_{w in simplex} g_w.g0 + c ||g0|| ||g_w||, SLSQP in u = w / c."""
    _, _, inverse = _scaling(g)
    c = np.where(inverse > 0, inverse / max(inverse.max(), 1e-300), 1.0)
    plane = dict(type="eq", fun=lambda u: c @ u - 1, jac=lambda u: c)
    starts = [c / (c @ c)] + [np.eye(len(g))[k] / c[k] for k in range(len(g))]
    values = []
    for start in starts:
        u = _slsqp(lambda u: _cagrad_objective(g, u * c), start, [(0, None)] * len(g), [plane])
        w = np.maximum(u, 0) * c
        values.append(_cagrad_objective(g, w / w.sum()))
    return min(values)


# -------------------------------------------------------------------------- defining properties


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_mgda_is_the_min_norm_point(name):
    g = rounded_gramian(name)
    w = weights("mgda", g)
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-6
    value = w @ g @ w
    # KKT of min over the simplex: g_k.d >= ||d||^2 for every task.
    norms = np.sqrt(np.diag(g))
    slack = 1e-6 * (norms * np.sqrt(value) + value) + _rounding_slack(g, w)
    assert np.all(g @ w >= value - slack)
    assert value <= _simplex_reference(g) * (1 + 1e-6) + 1e-6 * slack.max()


def _assert_box_kkt(g, v, lower):
    """KKT of min v^T G v over v >= lower: v feasible, G v >= 0, and G v = 0 off the bounds."""
    norms = np.sqrt(np.diag(g))
    slack = 1e-6 * norms * np.sqrt(max(v @ g @ v, 0.0)) + _rounding_slack(g, v)
    assert np.all(v >= lower - 1e-9 * np.abs(v).max())
    assert np.all(g @ v >= -slack)
    free = v > lower + 1e-6 * np.abs(v).max()
    assert np.all(np.abs(g @ v)[free] <= slack[free] + 1e-6 * (norms * np.abs(v))[free] * norms[free])


@pytest.mark.parametrize("name", INPUT_NAMES)
@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_upgrad_and_dualproj_conflict_with_no_task_and_project_exactly(method, name):
    g = rounded_gramian(name)
    num = len(g)
    w = weights(method, g)
    norms = np.sqrt(np.diag(g))
    update_norm = np.sqrt(max(w @ g @ w, 0.0))
    # Non-conflict, relative to each task's own norm: g_k.d >= 0.
    assert np.all(g @ w >= -1e-6 * norms * update_norm - _rounding_slack(g, w))
    # The projections: KKT on every input, and at least as good as scipy's where it is fast enough.
    if method == "dualproj":
        lowers, projections = np.full((1, num), 1.0 / num), w[None]
    else:
        lowers = np.eye(num)
        projections = numpy(solve_box_qp(np.float32(g), lowers))
        # UPGrad's update is the mean of the K projections: against K independent float64 ones (the
        # weights may differ where G is singular; the updates J^T w may not), relative to sum_k |w_k| ||g_k||.
        references = [_box_projection(g, lower) for lower in lowers]
        for lower, v in zip(lowers, references):
            _assert_box_kkt(g, v, lower)
        reference = np.mean(references, axis=0)
        difference = w - reference
        scale = np.abs(reference) @ norms
        assert np.sqrt(max(difference @ g @ difference, 0.0)) <= 1e-5 * scale, (w, reference)
    for lower, v in zip(lowers, projections):
        _assert_box_kkt(g, v, lower)
        if num <= 12:  # the scipy reference is too slow at K = 40
            scale = np.abs(lower) @ np.abs(g) @ np.abs(lower)
            assert v @ g @ v <= _box_reference(g, lower) * (1 + 1e-6) + 1e-12 * scale


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_cagrad_solves_its_inner_problem_and_stays_in_the_ball(name):
    g = rounded_gramian(name)
    num = len(g)
    mean = np.full(num, 1.0 / num)
    w = weights("cagrad", g)
    w_star = w * (1 + C**2) - mean
    g0 = np.sqrt(mean @ g @ mean)
    if np.abs(w_star).sum() <= 1e-6 * np.abs(mean).sum():
        return  # documented: g_w* = 0, d = g0 / (1 + c^2) (checked in test_degenerate_and_compile)
    w_star /= w_star.sum()
    assert np.all(w_star >= -1e-6)
    # The ball: ||(1 + c^2) d - g0|| = c ||g0||.
    offset = (w * (1 + C**2) - mean) @ g @ (w * (1 + C**2) - mean)
    np.testing.assert_allclose(np.sqrt(offset), C * g0, rtol=1e-5)
    if num <= 12:
        value = _cagrad_objective(g, w_star)
        reference = _cagrad_reference(g)
        scale = C * g0 * np.sqrt(max(w_star @ g @ w_star, 0.0))
        assert value <= reference + 1e-6 * (abs(reference) + scale)


@pytest.mark.parametrize("name", sorted(set(INPUT_NAMES) - set(RANK_DEFICIENT)))
def test_imtl_g_projects_equally_on_every_unit_gradient(name):
    g = rounded_gramian(name)
    a = weights("imtl_g", g)
    assert abs(a.sum() - 1) < 1e-5
    norms = np.sqrt(np.diag(g))
    projections = g @ a / norms
    slack = 1e-6 * np.abs(projections).max() + _rounding_slack(g, a) / norms
    assert np.all(np.abs(projections - projections.mean()) <= slack)
    assert projections.mean() > 0


@pytest.mark.parametrize("name", sorted(set(INPUT_NAMES) - {"zero_row"}))
def test_nash_solves_the_bargaining_equation(name):
    g = rounded_gramian(name)
    alpha = weights("nash_mtl", g)
    assert np.all(alpha > 0)
    scaled, norms, _ = _scaling(g)
    lowest = np.linalg.eigvalsh(scaled)[0]
    lift = max(len(g) * EPS32 - lowest, 0.0)  # documented: only for a singular G_s
    residual = (g @ alpha + lift * norms**2 * alpha) * alpha - 1
    assert np.all(np.abs(residual) <= 1e-6 + 8 * EPS32 * (np.abs(g) @ alpha) * alpha)
    if name not in RANK_DEFICIENT:
        assert lift == 0.0


@pytest.mark.parametrize("name", sorted(set(INPUT_NAMES) - set(RANK_DEFICIENT)))
def test_aligned_mtl_aligns_every_direction(name):
    g = rounded_gramian(name)
    b = numpy(alignment_matrix(g))
    aligned = b @ g @ b.T
    sigma2 = np.linalg.eigvalsh(g)[0]
    # Full rank: B G B^T = sigma_min^2 I (no direction dropped), to float64 eigh accuracy.
    tolerance = 1e-6 + 1e-15 * np.linalg.cond(g)
    np.testing.assert_allclose(aligned / sigma2, np.eye(len(g)), atol=tolerance)
    # The weights against numpy's float64 eigh: w = sigma_min V Lambda^-1/2 V^T 1/K. Compared as updates
    # J^T w (||J^T x|| = sqrt(x^T G x)): ||d|| = sigma_min / sqrt(K), the aligned rows being orthogonal of norm
    # sigma_min; plus the float32 rounding of the weights, eps32 sum_k |w_k| ||g_k||.
    eigenvalues, vectors = np.linalg.eigh(g)
    reference = np.sqrt(eigenvalues[0]) * vectors @ ((vectors.T @ np.full(len(g), 1.0 / len(g))) / np.sqrt(eigenvalues))
    difference = weights("aligned_mtl", g) - reference
    rounding = 2 * EPS32 * np.abs(reference) @ np.sqrt(np.diag(g))
    assert np.sqrt(max(difference @ g @ difference, 0.0)) <= tolerance * np.sqrt(sigma2 / len(g)) + rounding


# ------------------------------------------------------------------- invariances


UNIQUE = {"mgda", "upgrad", "dualproj", "cagrad", "imtl_g", "nash_mtl", "aligned_mtl"}


@pytest.mark.parametrize("name", ["norm_ratio_1e6", "cond_1e5", "duplicates", "wide_k6_p3", "k12"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_permutation_invariance(method, name):
    jac = jacobian(name)
    g = rounded_gramian(name)
    order = np.random.default_rng(len(g)).permutation(len(g))
    w = weights(method, g)
    permuted = weights(method, g[np.ix_(order, order)])
    if name == "duplicates":  # weights not unique for some methods: compare the updates
        scale = np.abs(w) @ np.linalg.norm(jac, axis=1)
        np.testing.assert_allclose(permuted @ jac[order], w @ jac, atol=1e-5 * scale)
    else:
        np.testing.assert_allclose(permuted, w[order], rtol=1e-5, atol=1e-6 * np.abs(w).max())


@pytest.mark.parametrize("name", ["norm_ratio_1e6", "conflicting_ratio_1e6", "collinear_opposing", "k12"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_positive_homogeneity(method, name):
    # J -> t J is G -> t^2 G; 2^20 scales the float32 Gramian exactly. Every method's update is
    # positively homogeneous (weights unchanged), except Nash-MTL's raw equation: a / t.
    g = rounded_gramian(name)
    t2 = 2.0**20
    expected = weights(method, g) / (np.sqrt(t2) if method == "nash_mtl" else 1.0)
    np.testing.assert_allclose(weights(method, t2 * g), expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())


# ----------------------------------------------------------------- the issue's cases, explicitly


def test_issue_cases_are_in_the_suite():
    assert set(ISSUE_CASES) <= set(INPUT_NAMES)


def test_imtl_g_conflict_120_x1000_projects_equally():
    # g1 = (1, 0), g2 = 1000 (cos 120, sin 120): G_s = [[1, -1/2], [-1/2, 1]], b = G_s^-1 1 = (2, 2),
    # a = (2, 2/1000) / 2.002: d = (g1 + g2/1000) / 1.001, projections (1/2, 1/2) / 1.001.
    g = rounded_gramian("conflict_120_x1000")
    a = weights("imtl_g", g)
    np.testing.assert_allclose(a, np.array([1.0, 1e-3]) / 1.001, rtol=1e-6)


def test_imtl_g_collinear_opposing_gives_a_zero_update():
    # g, -2g: 1 is in the null space of G_s = [[1, -1], [-1, 1]]: documented d = 0.
    jac = np.array([[1.0, 2.0], [-2.0, -4.0]])
    np.testing.assert_array_equal(weights("imtl_g", jac @ jac.T), [0.0, 0.0])


def test_imtl_g_rank_deficient_is_the_least_squares_solution():
    # K > P: d's projections on the unit gradients are proportional to the projection of 1 on
    # the range of G_s (documented), here not all equal.
    g = rounded_gramian("wide_k6_p3")
    a = weights("imtl_g", g)
    scaled, norms, _ = _scaling(g)
    values, vectors = np.linalg.eigh(scaled)
    kept = vectors[:, values > len(g) * EPS32]
    target = kept @ (kept.T @ np.ones(len(g)))
    projections = g @ a / norms
    np.testing.assert_allclose(projections / projections.sum(), target / target.sum(), rtol=1e-4, atol=1e-5)
