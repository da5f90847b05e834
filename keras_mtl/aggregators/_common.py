"""Shared pieces of the Gramian weightings: the compile decorator, the input guard, the scaling and the small solvers.

Every weighting takes the K x K Gramian ``G = J J^T`` of the per-task
gradients (K static, float32 as the engine computes it) and returns float32
weights ``w`` (K,), the shared update being ``d = J^T w``. Everything is
written in ``keras.ops``, so it runs on every Keras backend, and is
XLA-compatible: static shapes, fixed-iteration ``keras.ops.fori_loop`` s and
masks, no Python control flow on tensor values.

Precision: the K x K algebra costs nothing next to the gradients, so it runs
in float64 (``prepare_gramian``; on JAX inside ``jax.enable_x64``, see
``backend_function``), and every solve works on the Jacobi-scaled Gramian
``G_s = D^-1/2 G D^-1/2`` (``D = diag G``, unit diagonal, see
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

import keras
import numpy as np
from keras import ops

# Relative precision of the float32 Gramian the engine passes in.
FLOAT32_EPS = 2.0**-23

# Up to this many tasks the QPs are solved exactly by enumerating the 2^K
# supports (256 small solves at K = 8); beyond, iteratively.
EXACT_MAX_TASKS = 8

QP_ITERATIONS = 300

# ------------------------------------------------------------ compilation


def backend_function(fn, jit_compile=True):
    """``fn`` compiled for the Keras backend in use, with its float64 algebra intact.

    TensorFlow: ``tf.function(fn, jit_compile=jit_compile)`` (float64 is
    always available there). JAX: ``jax.jit`` of ``fn`` run inside
    ``jax.enable_x64(True)``, whatever ``jit_compile`` (JAX compiles
    everything with XLA): without it JAX silently computes every float64 of
    the K x K algebra in float32. It also works inside an outer ``jax.jit``
    (the engine's train step). The positional and keyword arguments that are
    Python values (floats, strings, None, lists: the methods' options) are
    compile-time constants, one compilation per value; arrays are traced.
    PyTorch: ``fn`` run eagerly, as Keras' torch trainer runs, inside
    ``float64_promotion`` (without it Keras' torch ops compute many float64s
    of the K x K algebra in float32). The
    undecorated function stays available as ``.python_function`` (as on a
    ``tf.function``).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # the one TensorFlow import of the aggregators

        return tf.function(fn, jit_compile=jit_compile)
    if backend == "torch":
        return _torch_float64_eager(fn)
    return _jax_float64_jit(fn)


def _torch_float64_eager(fn):
    """``fn`` in float64 promotion, its numpy arguments made tensors as ``tf.function`` and ``jax.jit`` make them."""
    tensor = lambda value: ops.convert_to_tensor(value) if isinstance(value, (np.ndarray, np.generic)) else value

    @functools.wraps(fn)
    def call(*args, **kwargs):
        # Imported here: the aggregators are imported before the engines.
        from keras_mtl.training.backends.torch.precision import float64_promotion

        with float64_promotion():
            return fn(*[tensor(value) for value in args], **{name: tensor(value) for name, value in kwargs.items()})

    call.python_function = fn
    return call


def xla_compiled(fn):
    """``backend_function(fn)``: for the weightings that solve a problem.

    The iterative solvers run hundreds of iterations of tiny K x K ops, and
    the exact ones hundreds of small batched solves: compiled with XLA each
    becomes a few fused kernels instead of thousands of dispatched ops, about
    10x faster on a CPU (`keras-mtl speed`).
    """
    return backend_function(fn, jit_compile=True)


def float64_function(fn):
    """``backend_function(fn, jit_compile=False)``: for the closed-form weightings (a plain graph on TensorFlow)."""
    return backend_function(fn, jit_compile=False)


def _is_static(value):
    return value is None or isinstance(value, (bool, int, float, str, list, tuple))


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


@functools.cache
def _jax_float64_jit(fn):
    """One compiled wrapper per function, so that every caller shares its compilations."""
    import jax

    compiled = {}

    def in_float64(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        static_positions = tuple(i for i, value in enumerate(args) if _is_static(value))
        static_names = tuple(sorted(name for name, value in kwargs.items() if _is_static(value)))
        key = (static_positions, static_names)
        if key not in compiled:
            compiled[key] = jax.jit(in_float64, static_argnums=static_positions, static_argnames=static_names)
        args = [_hashable(value) if i in static_positions else value for i, value in enumerate(args)]
        kwargs = {name: _hashable(value) if name in static_names else value for name, value in kwargs.items()}
        with jax.enable_x64(True):  # tracing and lowering both need it
            return compiled[key](*args, **kwargs)

    call.python_function = fn
    return call


# ------------------------------------------------------------ small helpers


def matvec(matrix, x):
    """``A x`` for a (batch of) matrices (.., n, n) and vectors (.., n), broadcast."""
    return ops.squeeze(ops.matmul(matrix, ops.expand_dims(x, -1)), -1)


def diagonal(matrix):
    """The diagonal of the last two axes (.., n)."""
    return ops.diagonal(matrix, axis1=-2, axis2=-1)


def take_rows(values, indices):
    """``values[b, indices[b]]`` for every row b: (B, N) and (B,) -> (B,)."""
    return ops.take_along_axis(values, ops.expand_dims(indices, 1), axis=1)[:, 0]


def kept_share(gradients, direction):
    """For the methods whose update is no weighting (GradDrop, TrimmedMean): the weight each task logs.

    How much of ``g_k`` the update keeps along itself, ``<d, g_k> / ||g_k||^2``
    (0 for a zero gradient).
    """
    return ops.divide_no_nan(matvec(gradients.jacobian, direction), diagonal(gradients.gramian))


def as_float64(x):
    return ops.cast(ops.convert_to_tensor(x), "float64")


def prepare_gramian(gramian):
    """Return ``(G, ok)``: G as symmetric float64, zeroed if not all finite."""
    gramian = as_float64(gramian)
    ok = ops.all(ops.isfinite(gramian))
    symmetric = 0.5 * (gramian + ops.transpose(gramian))
    return ops.where(ok, symmetric, ops.zeros_like(gramian)), ok


def finite_or_zero(weights, ok):
    """float32 weights, zero when the input was not finite (or, defensively, the result)."""
    weights = ops.cast(weights, "float32")
    ok = ops.logical_and(ok, ops.all(ops.isfinite(weights)))
    return ops.where(ok, weights, ops.zeros_like(weights))


def null_tolerance(num_tasks):
    """Eigenvalues of the (unit-diagonal) Jacobi-scaled Gramian at most this count as zero."""
    return num_tasks * FLOAT32_EPS


def jacobi_scale(gramian):
    """``(G_s, s)``: ``G_s = diag(s) G diag(s)`` with ``s_k = 1 / ||g_k||``.

    G_s has a unit diagonal (the cosines of the task gradients); a zero
    gradient gets ``s_k = 0`` and a zero row and column in G_s.
    """
    diag = diagonal(gramian)
    nonzero = diag > 0
    inverse_norms = ops.where(nonzero, ops.rsqrt(ops.where(nonzero, diag, 1.0)), 0.0)
    return gramian * inverse_norms[:, None] * inverse_norms[None, :], inverse_norms


def eye_like(matrix):
    return ops.eye(matrix.shape[-1], dtype=matrix.dtype)


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
    eye = eye_like(gramian)
    system = scaled + eye * ops.cast(inverse_norms == 0, gramian.dtype)
    lift = ops.maximum(null_tolerance(gramian.shape[0]) - ops.eigh(system)[0][0], 0.0)
    return system + lift * eye, inverse_norms


def clip_update_norm(gramian, weights, max_norm):
    """``weights`` scaled down so that ``||J^T w|| = sqrt(w^T G w) <= max_norm`` (None or <= 0: unchanged)."""
    if max_norm is None or max_norm <= 0:
        return weights
    norm = safe_sqrt(quadratic(gramian, weights))
    return weights * ops.where(norm > max_norm, max_norm / ops.maximum(norm, 1e-300), 1.0)


def safe_sqrt(x):
    return ops.sqrt(ops.maximum(x, ops.zeros_like(x)))


def random_orders(keys):
    """For each task i, a random order of the other tasks: int (K, K-1), from uniform keys (K, K).

    Task i visits the others by increasing ``keys[i, j]``; j = i gets the
    largest key (2, above any U(0, 1) draw) so that it sorts last and is
    dropped. The keys are drawn by the method (its `RandomStream`), so this
    is deterministic; PCGrad and GradVac share it so that the same draws give
    the same orders.
    """
    keys = ops.convert_to_tensor(keys)
    num = keys.shape[0]
    keys = ops.where(ops.eye(num) > 0, 2.0, keys)
    return ops.argsort(keys, axis=1)[:, : num - 1]


def pseudo_solve(matrix, rhs, tolerance):
    """``pinv(A) b`` for a (batch of) symmetric A (.., n, n) and b (.., n).

    Eigenvalues with ``|lambda| <= tolerance`` count as zero, so a singular
    A (identical, collinear or zero gradients) gives the exact minimum-norm
    least-squares solution.
    """
    eigenvalues, vectors = ops.eigh(matrix)
    kept = ops.abs(eigenvalues) > tolerance
    inverse = ops.where(kept, 1.0 / ops.where(kept, eigenvalues, 1.0), 0.0)
    coords = matvec(ops.swapaxes(vectors, -1, -2), rhs) * inverse
    return matvec(vectors, coords)


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
        factor = factor * (1.0 - ops.one_hot(k, num, dtype=matrix.dtype))  # row k stays
        matrix = matrix - factor[..., :, None] * pivot_row[..., None, :]
        rhs = rhs - factor * rhs[..., k : k + 1]
    return rhs / diagonal(matrix)


def cholesky_solve(matrix, rhs):
    """``A^-1 b`` for a (batch of) symmetric positive definite A (.., n, n) and b (.., n), by Cholesky."""
    factor = ops.cholesky(matrix)
    half = ops.solve_triangular(factor, rhs[..., None], lower=True)
    return ops.solve_triangular(ops.swapaxes(factor, -1, -2), half, lower=False)[..., 0]


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
    system = matrix + null_tolerance(num) * eye_like(matrix)
    if num <= EXACT_MAX_TASKS + 1:
        solve = functools.partial(spd_solve, system)
    else:  # one large system (the iterative path): Cholesky compiles faster than the unrolled loop
        solve = functools.partial(cholesky_solve, system)
    x = solve(rhs)
    for _ in range(refinements):
        x = x + solve(rhs - matvec(matrix, x))
    return x


def quadratic(matrix, x):
    """Row-wise ``x^T A x`` for a batch x (.., K)."""
    return ops.sum(matvec(matrix, x) * x, axis=-1)


def all_supports(num_tasks, include_empty=False):
    """Every subset of the K tasks as a static 0/1 float64 matrix (2^K [- 1], K)."""
    codes = np.arange(0 if include_empty else 1, 2**num_tasks)
    return ops.convert_to_tensor(((codes[:, None] >> np.arange(num_tasks)) & 1).astype(np.float64))


def masked_system(matrix, free):
    """Batch of ``F A F + (I - F)``: A on the free block, the identity elsewhere.

    ``free`` (.., K) is 0/1; a solve with this system and a right-hand side
    that is zero off the free block solves the free block alone.
    """
    eye = eye_like(matrix)
    return free[..., :, None] * free[..., None, :] * matrix + eye * (1.0 - free[..., None, :])


def least_objective(objective, candidates, feasible):
    """Per problem, the feasible candidate with the least objective.

    ``objective`` and ``feasible`` are (B, M), ``candidates`` (B, M, K).
    Near-ties (within 1e-9 relative, 1e-14 absolute: the objectives are in
    the Jacobi-scaled units, of order 1) go to the candidate of least
    norm, so that e.g. identical gradients get equal weights. At least one
    candidate per problem must be feasible.
    """
    objective = ops.where(feasible, objective, np.inf)
    best = ops.min(objective, axis=-1, keepdims=True)
    near = objective <= best + 1e-9 * ops.abs(best) + 1e-14
    norms = ops.where(near, ops.sum(candidates**2, -1), np.inf)
    chosen = first_true(norms == ops.min(norms, axis=-1, keepdims=True))
    return ops.sum(ops.where(chosen[..., None], candidates, 0.0), axis=-2)


def first_true(mask):
    """``mask`` with only its first True kept along the last axis.

    An argmin without integers: JAX traces the float64 algebra with 64-bit
    integers, and an ``argmin`` lowered by an outer ``jax.jit`` (the
    engine's step, outside ``jax.enable_x64``) fails to compile.
    """
    return mask & (ops.cumsum(ops.cast(mask, "float64"), axis=-1) == 1.0)


# ---------------------------------------------------------------- box QP


def _box_face_solve(scaled, lower, free):
    """Face minimiser of ``u^T A u`` for bounds ``lower`` and 0/1 free sets (broadcast, .., K).

    Held coordinates sit at their bound; the free ones zero the gradient:
    ``A_FF u_F = -A_FH b_H`` (A PSD puts the right-hand side in the range of
    A_FF, so the minimum-norm solution from ``regularized_solve`` is an
    exact minimiser).
    """
    held = (1.0 - free) * lower
    rhs = -free * matvec(scaled, held)
    return held + regularized_solve(masked_system(scaled, free), rhs)


def _box_select(scaled, lower, candidates):
    """The feasible (``u >= lower``) candidate of least ``u^T A u``, per row."""
    slack = 1e-9 * (1.0 + ops.max(ops.abs(candidates), -1, keepdims=True))
    feasible = ops.all(candidates >= lower[:, None, :] - slack, axis=-1)
    candidates = ops.maximum(candidates, lower[:, None, :])
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

    def body(_, carry):
        x, y, t = carry
        x_new = project(y - step * gradient(y))
        t_new = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        # Restart the momentum of a row when it points uphill.
        restart = ops.sum((y - x_new) * (x_new - x), -1, keepdims=True) > 0
        momentum = ops.where(restart, ops.zeros_like(t), (t - 1.0) / t_new)
        return x_new, x_new + momentum * (x_new - x), ops.where(restart, ops.ones_like(t), t_new)

    t0 = ops.ones_like(x0[:, :1])
    x, _, _ = ops.fori_loop(0, iterations, body, (x0, x0, t0))
    return x


def _curvature_bound(matrix):
    """``||A||_F >= lambda_max(A)``: a safe 1/step for FISTA (no eigh to compile)."""
    return ops.maximum(ops.sqrt(ops.sum(matrix**2)), 1e-12)


def _box_iterative(scaled, lower, iterations):
    """FISTA from ``u = lower``, then the exact solve on the face it identified.

    The face solve (free coordinates: off their bound, or pushed off it by
    the gradient) is kept when it is feasible and no worse; it is the exact
    optimum whenever the face is right, which it is unless the problem is
    nearly degenerate.
    """
    u = accelerated_projected_gradient(
        lambda x: ops.matmul(x, scaled),
        lambda x: ops.maximum(x, lower),
        lower,
        1.0 / _curvature_bound(scaled),
        iterations,
    )
    tolerance = 1e-7 * ops.max(ops.abs(u), -1, keepdims=True)
    free = ops.cast((u - lower > tolerance) | (ops.matmul(u, scaled) < -tolerance), "float64")
    candidates = ops.stack([u, _box_face_solve(scaled, lower, free)], axis=1)
    return _box_select(scaled, lower, candidates)


def solve_box_qp(gramian, lower, iterations=QP_ITERATIONS):
    """``argmin_{v >= lower} v^T G v`` for each row of ``lower`` (B, K), float64.

    Solved on the Jacobi-scaled G (``v = s u``, bounds ``lower / s``), each
    row's bounds divided by their largest magnitude (the argmin is
    positively homogeneous in them). K <= 8: exact, by enumerating the free
    sets (``_box_exact``); K > 8: accelerated projected gradient and a face
    solve (``_box_iterative``). A zero gradient's coordinate stays at its
    bound; G = 0 gives ``v = lower``. When the minimiser is not unique
    (singular G) the update ``J^T v`` still is. Call it inside a
    ``backend_function`` (float64 on JAX).
    """
    gramian = as_float64(gramian)
    lower = as_float64(lower)
    scaled, inverse_norms = jacobi_scale(gramian)
    nonzero = inverse_norms > 0
    bounds = ops.where(nonzero, lower / ops.where(nonzero, inverse_norms, 1.0), 0.0)
    size = ops.max(ops.abs(bounds), -1, keepdims=True)
    bounds = ops.divide_no_nan(bounds, size)
    if gramian.shape[0] <= EXACT_MAX_TASKS:
        u = _box_exact(scaled, bounds)
    else:
        u = _box_iterative(scaled, bounds, iterations)
    return ops.where(nonzero, u * size * inverse_norms, lower)


# ------------------------------------------------------------ simplex QP


def project_weighted_simplex(y, c):
    """Row-wise Euclidean projection of y (B, K) onto ``{x >= 0, c^T x = 1}``, c > 0 (K,).

    ``x = max(y - theta c, 0)`` with theta found from the sorted breakpoints
    ``y_k / c_k`` (Duchi et al. 2008 for c = 1).
    """
    order = ops.argsort(-(y / c), axis=-1)  # descending breakpoints
    sorted_y = ops.take_along_axis(y, order, axis=-1)
    sorted_c = ops.take(c, order)
    thetas = (ops.cumsum(sorted_c * sorted_y, axis=-1) - 1.0) / ops.cumsum(sorted_c**2, axis=-1)
    support = ops.sum(ops.cast(sorted_y / sorted_c > thetas, "int32"), -1)
    theta = take_rows(thetas, ops.maximum(support, 1) - 1)
    return ops.maximum(y - theta[:, None] * c, 0.0)


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
    return ops.divide_no_nan(x, ops.sum(x * c, -1, keepdims=True))


def simplex_feasible(candidates, c):
    """``u >= 0`` (to roundoff) and ``c^T u = 1``, per candidate (.., K)."""
    slack = 1e-9 * ops.max(ops.abs(candidates), -1, keepdims=True)
    on_plane = ops.abs(ops.sum(candidates * c, -1) - 1.0) < 1e-6
    return on_plane & ops.all(candidates >= -slack, axis=-1)


def _simplex_select(scaled, c, candidates):
    """The feasible candidate (M, K) of least ``u^T A u``, clipped to the simplex."""
    feasible = simplex_feasible(candidates, c)
    candidates = ops.maximum(candidates, 0.0)
    candidates = candidates / ops.sum(candidates * c, -1, keepdims=True)
    return least_objective(quadratic(scaled, candidates)[None], candidates[None], feasible[None])[0]


def _simplex_iterative(scaled, c, iterations):
    """FISTA from ``u = c / ||c||^2``, then the exact solve on the identified face."""
    u = accelerated_projected_gradient(
        lambda x: 2.0 * ops.matmul(x, scaled),
        lambda x: project_weighted_simplex(x, c),
        (c / ops.sum(c**2))[None],
        0.5 / _curvature_bound(scaled),
        iterations,
    )
    # KKT: (A u)_k >= (u^T A u) c_k, with equality on the support.
    tolerance = 1e-7 * ops.max(u)
    slope = ops.matmul(u, scaled) - quadratic(scaled, u)[:, None] * c
    free = ops.cast((u > tolerance) | (slope < -tolerance), "float64")
    return _simplex_select(scaled, c, ops.concatenate([u, simplex_face_candidates(scaled, c, free)], 0))


def simplex_scaling(gramian):
    """``(G_s, c, max(s))``: the simplex ``sum w = 1`` in ``u = w / c``, ``c = s / max(s)``.

    With ``w = c u``: ``w^T G w = u^T G_s u / max(s)^2`` and ``sum w = c^T u``,
    so a simplex problem on G becomes one on the unit-diagonal G_s over
    ``{u >= 0, c^T u = 1}``, c in (0, 1]. A zero gradient gets ``c_k = 1``
    (and a zero row in G_s).
    """
    scaled, inverse_norms = jacobi_scale(gramian)
    largest = ops.max(inverse_norms)
    c = ops.where(inverse_norms > 0, ops.divide_no_nan(inverse_norms, largest), 1.0)
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
    gramian = as_float64(gramian)
    num = gramian.shape[0]
    scaled, c, _ = simplex_scaling(gramian)
    zero = ops.cast(diagonal(gramian) <= 0, "float64")
    if num <= EXACT_MAX_TASKS:
        u = _simplex_select(scaled, c, simplex_face_candidates(scaled, c, all_supports(num)))
    else:
        u = _simplex_iterative(scaled, c, iterations)
    return ops.where(ops.any(zero > 0), ops.divide_no_nan(zero, ops.sum(zero)), u * c)
