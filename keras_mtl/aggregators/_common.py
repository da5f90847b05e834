"""Shared pieces of the Gramian weightings: the input guard, the scaling and the small solvers.

Every weighting takes the K x K Gramian ``G = J J^T`` of the per-task
gradients (K static, float32 as the engine computes it) and returns float32
weights ``w`` (K,), the shared update being ``d = J^T w``. All helpers are
graph- and XLA-compatible: static shapes, fixed-iteration ``tf.while_loop`` s
and masks, no Python control flow on tensor values; they use plain linear
algebra (matmul, eigh, sort, gather) so that a port to ``keras.ops`` is
mechanical.

Precision: the K x K algebra costs nothing next to the gradients, so it runs
in float64 (``prepare_gramian``), and every solve works on the Jacobi-scaled
Gramian ``G_s = D^-1/2 G D^-1/2`` (``D = diag G``, unit diagonal, see
``jacobi_scale``) and maps back. Rescaling one task's gradient leaves G_s
unchanged, so no tolerance depends on how large another task is. An
eigenvalue of a (block of) G_s counts as zero when it is at most
``null_tolerance(K) = K * 2^-23``: the float32 rounding of G moves the
eigenvalues of G_s by about that much, so smaller ones are not resolved by
the input.

Degenerate-input convention (shared by every method): a Gramian with any
non-finite entry gives all-zero weights, i.e. the step is skipped for the
shared parameters. As a last line of defence a non-finite result (including
float64 weights that overflow float32) is also replaced by zeros, so no
method can return NaN weights.
"""

import functools

import numpy as np
import tensorflow as tf

# Relative precision of the float32 Gramian the engine passes in.
FLOAT32_EPS = 2.0**-23

# Up to this many tasks the QPs are solved exactly by enumerating the 2^K
# supports (256 small solves at K = 8); beyond, iteratively.
EXACT_MAX_TASKS = 8

QP_ITERATIONS = 300

# The iterative solvers run hundreds of iterations of tiny K x K ops, and the
# exact ones hundreds of small batched solves: compiled with XLA each becomes
# a few fused kernels instead of thousands of dispatched ops, about 10x faster
# on a CPU (`keras-mtl speed`). Applied to the weightings that solve a problem;
# random ones stay uncompiled, as XLA draws other numbers from the same seed.
xla_compiled = tf.function(jit_compile=True)


def prepare_gramian(gramian):
    """Return ``(G, ok)``: G as symmetric float64, zeroed if not all finite."""
    gramian = tf.cast(tf.convert_to_tensor(gramian), tf.float64)
    ok = tf.reduce_all(tf.math.is_finite(gramian))
    symmetric = 0.5 * (gramian + tf.transpose(gramian))
    return tf.where(ok, symmetric, tf.zeros_like(gramian)), ok


def finite_or_zero(weights, ok):
    """float32 weights, zero when the input was not finite (or, defensively, the result)."""
    weights = tf.cast(weights, tf.float32)
    ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(weights)))
    return tf.where(ok, weights, tf.zeros_like(weights))


def null_tolerance(num_tasks):
    """Eigenvalues of the (unit-diagonal) Jacobi-scaled Gramian at most this count as zero."""
    return num_tasks * FLOAT32_EPS


def jacobi_scale(gramian):
    """``(G_s, s)``: ``G_s = diag(s) G diag(s)`` with ``s_k = 1 / ||g_k||``.

    G_s has a unit diagonal (the cosines of the task gradients); a zero
    gradient gets ``s_k = 0`` and a zero row and column in G_s.
    """
    diagonal = tf.linalg.diag_part(gramian)
    nonzero = diagonal > 0
    inverse_norms = tf.where(nonzero, tf.math.rsqrt(tf.where(nonzero, diagonal, 1.0)), 0.0)
    return gramian * inverse_norms[:, None] * inverse_norms[None, :], inverse_norms


def lifted_jacobi_system(gramian):
    """``(A, s)``: the Jacobi-scaled ``G_s`` (see `jacobi_scale`), made positive definite.

    For the equations ``G w = f(w)`` of Nash-MTL and FairGrad. A zero
    gradient's row becomes the identity row (its equation is decoupled; its
    weight is set to 0 afterwards). When G_s is singular at float32
    resolution (smallest eigenvalue <= ``null_tolerance(K)``: 0 in the
    convex hull of the gradients, or K > P) it is lifted to that smallest
    eigenvalue, ``G_s + (tol - lambda_min) I``: a ridge relative to each
    task's own squared norm. A positive definite G_s is left as it is: no
    ridge, no bias.
    """
    scaled, inverse_norms = jacobi_scale(gramian)
    eye = tf.eye(gramian.shape[0], dtype=gramian.dtype)
    system = scaled + eye * tf.cast(inverse_norms == 0, gramian.dtype)
    lift = tf.maximum(null_tolerance(gramian.shape[0]) - tf.linalg.eigvalsh(system)[0], 0.0)
    return system + lift * eye, inverse_norms


def clip_update_norm(gramian, weights, max_norm):
    """``weights`` scaled down so that ``||J^T w|| = sqrt(w^T G w) <= max_norm`` (None or <= 0: unchanged)."""
    if max_norm is None or max_norm <= 0:
        return weights
    norm = safe_sqrt(quadratic(gramian, weights))
    return weights * tf.where(norm > max_norm, max_norm / tf.maximum(norm, 1e-300), 1.0)


def safe_sqrt(x):
    return tf.sqrt(tf.maximum(x, tf.zeros_like(x)))


def stateless_uniform(shape, seed):
    """U(0, 1) draws from an int32 (2,) seed (Philox pinned, so CPU and GPU agree).

    Reproducible for a given seed, but TensorFlow's XLA kernel draws different
    numbers than its non-XLA one: a jit-compiled step is reproducible against
    other jit-compiled steps only.
    """
    return tf.random.stateless_uniform(shape, seed=seed, alg="philox")


def random_orders(seed, num_tasks):
    """For each task i, a random order of the other tasks: int32 (K, K-1).

    One stateless uniform key per (i, j); j = i gets the largest key so that
    it sorts last and is dropped. Shared by PCGrad and GradVac so that the
    same seed gives the same orders.
    """
    keys = stateless_uniform((num_tasks, num_tasks), seed)
    keys = tf.linalg.set_diag(keys, tf.fill([num_tasks], 2.0))
    return tf.argsort(keys, axis=1)[:, : num_tasks - 1]


def pseudo_solve(matrix, rhs, tolerance):
    """``pinv(A) b`` for a (batch of) symmetric A (.., n, n) and b (.., n).

    Eigenvalues with ``|lambda| <= tolerance`` count as zero, so a singular
    A (identical, collinear or zero gradients) gives the exact minimum-norm
    least-squares solution.
    """
    eigenvalues, vectors = tf.linalg.eigh(matrix)
    kept = tf.abs(eigenvalues) > tolerance
    inverse = tf.where(kept, 1.0 / tf.where(kept, eigenvalues, 1.0), 0.0)
    coords = tf.linalg.matvec(vectors, rhs, transpose_a=True) * inverse
    return tf.linalg.matvec(vectors, coords)


def spd_solve(matrix, rhs):
    """``A^-1 b`` for a batch of symmetric positive definite A (.., n, n), b (.., n).

    Gauss-Jordan elimination without pivoting (stable for SPD, like
    Cholesky), unrolled over the static n: plain elementwise ops that XLA
    fuses, much cheaper to compile and run than its batched eigh or
    Cholesky on hundreds of tiny systems.
    """
    num = matrix.shape[-1]
    for k in range(num):
        pivot_row = matrix[..., k, :]
        factor = matrix[..., :, k] / matrix[..., k, k : k + 1]
        factor *= 1.0 - tf.one_hot(k, num, dtype=matrix.dtype)  # row k stays
        matrix = matrix - factor[..., :, None] * pivot_row[..., None, :]
        rhs = rhs - factor * rhs[..., k : k + 1]
    return rhs / tf.linalg.diag_part(matrix)


def regularized_solve(matrix, rhs, refinements=2):
    """``lim_{delta -> 0} (A + delta I)^-1 b`` for a batch of PSD A, to float64 precision.

    ``delta = null_tolerance(n)`` makes the system positive definite even
    when the float32 input left A slightly indefinite; then ``refinements``
    steps ``x += (A + delta I)^-1 (b - A x)`` remove the regularisation on
    every eigen-direction well above delta. For b in the range of A this is
    the minimum-norm solution ``A^+ b``; a component of b in the null space
    of A dominates x (it grows by 1/delta per step), which is what the
    simplex solves need (see ``simplex_face_candidates``).
    """
    num = matrix.shape[-1]
    system = matrix + null_tolerance(num) * tf.eye(num, dtype=matrix.dtype)
    if num <= EXACT_MAX_TASKS + 1:
        solve = functools.partial(spd_solve, system)
    else:  # one large system (the iterative path): Cholesky compiles faster than the unrolled loop
        factor = tf.linalg.cholesky(system)
        solve = lambda b: tf.linalg.cholesky_solve(factor, b[..., None])[..., 0]  # noqa: E731
    x = solve(rhs)
    for _ in range(refinements):
        x += solve(rhs - tf.linalg.matvec(matrix, x))
    return x


def quadratic(matrix, x):
    """Row-wise ``x^T A x`` for a batch x (.., K)."""
    return tf.reduce_sum(tf.linalg.matvec(matrix, x) * x, axis=-1)


def all_supports(num_tasks, include_empty=False):
    """Every subset of the K tasks as a static 0/1 float64 matrix (2^K [- 1], K)."""
    codes = np.arange(0 if include_empty else 1, 2**num_tasks)
    return tf.constant((codes[:, None] >> np.arange(num_tasks)) & 1, tf.float64)


def masked_system(matrix, free):
    """Batch of ``F A F + (I - F)``: A on the free block, the identity elsewhere.

    ``free`` (.., K) is 0/1; a solve with this system and a right-hand side
    that is zero off the free block solves the free block alone.
    """
    eye = tf.eye(matrix.shape[-1], dtype=matrix.dtype)
    return free[..., :, None] * free[..., None, :] * matrix + eye * (1.0 - free[..., None, :])


def least_objective(objective, candidates, feasible):
    """Per problem, the feasible candidate with the least objective.

    ``objective`` and ``feasible`` are (B, M), ``candidates`` (B, M, K).
    Near-ties (within 1e-9 relative, 1e-14 absolute: the objectives are in
    the Jacobi-scaled units, of order 1) go to the candidate of least
    norm, so that e.g. identical gradients get equal weights. At least one
    candidate per problem must be feasible.
    """
    inf = tf.constant(np.inf, objective.dtype)
    objective = tf.where(feasible, objective, inf)
    best = tf.reduce_min(objective, axis=-1, keepdims=True)
    near = objective <= best + 1e-9 * tf.abs(best) + 1e-14
    norms = tf.where(near, tf.reduce_sum(candidates**2, -1), inf)
    return tf.gather(candidates, tf.argmin(norms, axis=-1), batch_dims=1)


# ---------------------------------------------------------------- box QP


def _box_face_solve(scaled, lower, free):
    """Face minimiser of ``u^T A u`` for bounds ``lower`` and 0/1 free sets (broadcast, .., K).

    Held coordinates sit at their bound; the free ones zero the gradient:
    ``A_FF u_F = -A_FH b_H`` (A PSD puts the right-hand side in the range of
    A_FF, so the minimum-norm solution from ``regularized_solve`` is an
    exact minimiser).
    """
    held = (1.0 - free) * lower
    rhs = -free * tf.linalg.matvec(scaled, held)
    return held + regularized_solve(masked_system(scaled, free), rhs)


def _box_select(scaled, lower, candidates):
    """The feasible (``u >= lower``) candidate of least ``u^T A u``, per row."""
    slack = 1e-9 * (1.0 + tf.reduce_max(tf.abs(candidates), -1, keepdims=True))
    feasible = tf.reduce_all(candidates >= lower[:, None, :] - slack, axis=-1)
    candidates = tf.maximum(candidates, lower[:, None, :])
    return least_objective(quadratic(scaled, candidates), candidates, feasible)


def _box_exact(scaled, lower):
    """Exact ``argmin_{u >= lower} u^T A u`` by enumerating the 2^K free sets.

    The optimum's free set is among them and its face solve is the optimum
    (or, with a singular block, a vertex of the optimal set is reached from
    a smaller free set); every candidate is a feasible point, so the least
    feasible objective is the optimum.
    """
    free = all_supports(scaled.shape[-1], include_empty=True)
    return _box_select(scaled, lower, _box_face_solve(scaled, lower[:, None, :], free[None]))


def accelerated_projected_gradient(gradient, project, x0, step, iterations):
    """FISTA with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    Minimises a smooth convex function over a convex set, row-wise for a batch
    ``x0`` (B, K); ``step`` is 1/L. A fixed number of iterations keeps it
    XLA-compatible.
    """

    def body(x, y, t):
        x_new = project(y - step * gradient(y))
        t_new = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * t * t))
        # Restart the momentum of a row when it points uphill.
        restart = tf.reduce_sum((y - x_new) * (x_new - x), -1, keepdims=True) > 0
        momentum = tf.where(restart, tf.zeros_like(t), (t - 1.0) / t_new)
        return x_new, x_new + momentum * (x_new - x), tf.where(restart, tf.ones_like(t), t_new)

    t0 = tf.ones_like(x0[:, :1])
    x, _, _ = tf.while_loop(lambda *_: True, body, (x0, x0, t0), maximum_iterations=iterations)
    return x


def _curvature_bound(matrix):
    """``||A||_F >= lambda_max(A)``: a safe 1/step for FISTA (no eigh to compile)."""
    return tf.maximum(tf.norm(matrix), 1e-12)


def _box_iterative(scaled, lower, iterations):
    """FISTA from ``u = lower``, then the exact solve on the face it identified.

    The face solve (free coordinates: off their bound, or pushed off it by
    the gradient) is kept when it is feasible and no worse; it is the exact
    optimum whenever the face is right, which it is unless the problem is
    nearly degenerate.
    """
    u = accelerated_projected_gradient(
        lambda x: tf.matmul(x, scaled),
        lambda x: tf.maximum(x, lower),
        lower,
        1.0 / _curvature_bound(scaled),
        iterations,
    )
    tolerance = 1e-7 * tf.reduce_max(tf.abs(u), -1, keepdims=True)
    free = tf.cast((u - lower > tolerance) | (tf.matmul(u, scaled) < -tolerance), tf.float64)
    candidates = tf.stack([u, _box_face_solve(scaled, lower, free)], axis=1)
    return _box_select(scaled, lower, candidates)


def solve_box_qp(gramian, lower, iterations=QP_ITERATIONS):
    """``argmin_{v >= lower} v^T G v`` for each row of ``lower`` (B, K), float64.

    Solved on the Jacobi-scaled G (``v = s u``, bounds ``lower / s``), each
    row's bounds divided by their largest magnitude (the argmin is
    positively homogeneous in them). K <= 8: exact, by enumerating the free
    sets (``_box_exact``); K > 8: accelerated projected gradient and a face
    solve (``_box_iterative``). A zero gradient's coordinate stays at its
    bound; G = 0 gives ``v = lower``. When the minimiser is not unique
    (singular G) the update ``J^T v`` still is.
    """
    gramian = tf.cast(gramian, tf.float64)
    lower = tf.cast(lower, tf.float64)
    scaled, inverse_norms = jacobi_scale(gramian)
    nonzero = inverse_norms > 0
    bounds = tf.where(nonzero, lower / tf.where(nonzero, inverse_norms, 1.0), 0.0)
    size = tf.reduce_max(tf.abs(bounds), -1, keepdims=True)
    bounds = tf.math.divide_no_nan(bounds, size)
    if gramian.shape[0] <= EXACT_MAX_TASKS:
        u = _box_exact(scaled, bounds)
    else:
        u = _box_iterative(scaled, bounds, iterations)
    return tf.where(nonzero, u * size * inverse_norms, lower)


# ------------------------------------------------------------ simplex QP


def project_weighted_simplex(y, c):
    """Row-wise Euclidean projection of y (B, K) onto ``{x >= 0, c^T x = 1}``, c > 0 (K,).

    ``x = max(y - theta c, 0)`` with theta found from the sorted breakpoints
    ``y_k / c_k`` (Duchi et al. 2008 for c = 1).
    """
    order = tf.argsort(y / c, axis=-1, direction="DESCENDING")
    sorted_y = tf.gather(y, order, batch_dims=1)
    sorted_c = tf.gather(c, order)
    thetas = (tf.cumsum(sorted_c * sorted_y, axis=-1) - 1.0) / tf.cumsum(sorted_c**2, axis=-1)
    support = tf.reduce_sum(tf.cast(sorted_y / sorted_c > thetas, tf.int32), -1)
    theta = tf.gather(thetas, tf.maximum(support, 1) - 1, batch_dims=1)
    return tf.maximum(y - theta[:, None] * c, 0.0)


def simplex_face_candidates(scaled, c, free):
    """Minimisers of ``u^T A u`` subject to ``c^T u = 1`` on each free set (M, K).

    ``u = x / c^T x`` with ``x = A_FF^+ c_F`` when c_F is in the range of
    A_FF (the KKT solution; the least-norm one for singular A_FF, e.g.
    identical gradients); otherwise some null vector n of A_FF has
    ``c^T n != 0`` (0 is in the hull of the free gradients) and ``u`` is the
    projection of c_F on the null space, normalised: objective 0. Both come
    from ``regularized_solve``. Returns (M, K) candidates, zero off F, with
    ``c^T u = 1`` (or all zero when ``c^T x = 0``).
    """
    x = regularized_solve(masked_system(scaled, free), free * c)
    return tf.math.divide_no_nan(x, tf.reduce_sum(x * c, -1, keepdims=True))


def simplex_feasible(candidates, c):
    """``u >= 0`` (to roundoff) and ``c^T u = 1``, per candidate (.., K)."""
    slack = 1e-9 * tf.reduce_max(tf.abs(candidates), -1, keepdims=True)
    on_plane = tf.abs(tf.reduce_sum(candidates * c, -1) - 1.0) < 1e-6
    return on_plane & tf.reduce_all(candidates >= -slack, axis=-1)


def _simplex_select(scaled, c, candidates):
    """The feasible candidate (M, K) of least ``u^T A u``, clipped to the simplex."""
    feasible = simplex_feasible(candidates, c)
    candidates = tf.maximum(candidates, 0.0)
    candidates /= tf.reduce_sum(candidates * c, -1, keepdims=True)
    return least_objective(quadratic(scaled, candidates)[None], candidates[None], feasible[None])[0]


def _simplex_iterative(scaled, c, iterations):
    """FISTA from ``u = c / ||c||^2``, then the exact solve on the identified face."""
    u = accelerated_projected_gradient(
        lambda x: 2.0 * tf.matmul(x, scaled),
        lambda x: project_weighted_simplex(x, c),
        (c / tf.reduce_sum(c**2))[None],
        0.5 / _curvature_bound(scaled),
        iterations,
    )
    # KKT: (A u)_k >= (u^T A u) c_k, with equality on the support.
    tolerance = 1e-7 * tf.reduce_max(u)
    slope = tf.matmul(u, scaled) - quadratic(scaled, u)[:, None] * c
    free = tf.cast((u > tolerance) | (slope < -tolerance), tf.float64)
    return _simplex_select(scaled, c, tf.concat([u, simplex_face_candidates(scaled, c, free)], 0))


def simplex_scaling(gramian):
    """``(G_s, c, max(s))``: the simplex ``sum w = 1`` in ``u = w / c``, ``c = s / max(s)``.

    With ``w = c u``: ``w^T G w = u^T G_s u / max(s)^2`` and ``sum w = c^T u``,
    so a simplex problem on G becomes one on the unit-diagonal G_s over
    ``{u >= 0, c^T u = 1}``, c in (0, 1]. A zero gradient gets ``c_k = 1``
    (and a zero row in G_s).
    """
    scaled, inverse_norms = jacobi_scale(gramian)
    largest = tf.reduce_max(inverse_norms)
    c = tf.where(inverse_norms > 0, tf.math.divide_no_nan(inverse_norms, largest), 1.0)
    return scaled, c, largest


def solve_simplex_qp(gramian, iterations=QP_ITERATIONS):
    """``argmin_{w in simplex} w^T G w`` (the min-norm point of the convex hull), float64 (K,).

    Solved in ``u = w / c`` on the Jacobi-scaled G_s (``simplex_scaling``):
    ``min u^T G_s u`` over ``{u >= 0, c^T u = 1}``. K <= 8: exact, the least feasible KKT solution
    over all 255 supports (``simplex_face_candidates``); K > 8: accelerated
    projected gradient and the exact solve on the identified face.

    Degenerate inputs: zero gradients lie in the hull, so the weights are
    uniform over them (``d = 0``); among several minimisers (identical
    gradients) the least-norm one, e.g. uniform weights for identical
    gradients; opposing collinear gradients give the weights that cancel
    them (``d = 0``).
    """
    gramian = tf.cast(gramian, tf.float64)
    num = gramian.shape[0]
    scaled, c, _ = simplex_scaling(gramian)
    zero = tf.cast(tf.linalg.diag_part(gramian) <= 0, tf.float64)
    if num <= EXACT_MAX_TASKS:
        u = _simplex_select(scaled, c, simplex_face_candidates(scaled, c, all_supports(num)))
    else:
        u = _simplex_iterative(scaled, c, iterations)
    return tf.where(tf.reduce_any(zero > 0), zero / tf.reduce_sum(zero), u * c)
