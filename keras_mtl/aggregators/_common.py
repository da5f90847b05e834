"""Shared pieces of the Gramian weightings: the input guard and small solvers.

Every weighting takes the K x K Gramian ``G = J J^T`` of the per-task
gradients (K static) and returns float32 weights ``w`` (K,), the shared update
being ``d = J^T w``. All helpers are graph- and XLA-compatible: fixed-iteration
``tf.while_loop`` s and masks, no Python control flow on tensor values.

Degenerate-input convention (shared by every method): a Gramian with any
non-finite entry gives all-zero weights, i.e. the step is skipped for the
shared parameters. As a last line of defence a non-finite result is also
replaced by zeros, so no method can return NaN weights.
"""

import tensorflow as tf

# Eigenvalues at most this fraction of the largest, times K, count as zero:
# float32 eigh leaves about K * eps * lambda_max of noise on exact zeros.
RANK_TOLERANCE = 10 * 1.2e-7

QP_ITERATIONS = 300

# The solvers run hundreds of iterations of tiny K x K ops: compiled with XLA,
# each loop becomes one fused kernel instead of thousands of dispatched ops,
# about 10x faster on a CPU (`keras-mtl speed`). Applied to the weightings that
# solve a problem iteratively; random ones stay uncompiled, as XLA draws other
# numbers from the same seed.
xla_compiled = tf.function(jit_compile=True)


def prepare_gramian(gramian):
    """Return ``(G, ok)``: G as symmetric float32, zeroed if not all finite."""
    gramian = tf.cast(tf.convert_to_tensor(gramian), tf.float32)
    ok = tf.reduce_all(tf.math.is_finite(gramian))
    symmetric = 0.5 * (gramian + tf.transpose(gramian))
    return tf.where(ok, symmetric, tf.zeros_like(gramian)), ok


def finite_or_zero(weights, ok):
    """Zero weights when the input was not finite (or, defensively, the result)."""
    ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(weights)))
    return tf.where(ok, weights, tf.zeros_like(weights))


def normalize_gramian(gramian):
    """G divided by its mean diagonal (mean squared gradient norm); 0 stays 0.

    Most weightings are invariant to rescaling G, and the solvers' tolerances
    and step sizes are then scale-free.
    """
    scale = tf.linalg.trace(gramian) / gramian.shape[0]
    return tf.math.divide_no_nan(gramian, scale)


def safe_sqrt(x):
    return tf.sqrt(tf.maximum(x, 0.0))


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


def symmetric_spectrum(matrix):
    """``(eigenvalues, vectors, nonzero)`` of a (batch of) symmetric matrix."""
    eigenvalues, vectors = tf.linalg.eigh(matrix)
    largest = tf.reduce_max(eigenvalues, axis=-1, keepdims=True)
    nonzero = eigenvalues > RANK_TOLERANCE * matrix.shape[-1] * largest
    return eigenvalues, vectors, nonzero


def pseudo_solve(matrix, rhs):
    """``pinv(A) b`` for a (batch of) symmetric PSD A (.., K, K) and b (.., K).

    Singular Gramians (identical, collinear or zero gradients) are the rule
    among the degenerate inputs: the pseudo-inverse gives the exact
    minimum-norm solution where a float32 ridge would lose accuracy.
    """
    eigenvalues, vectors, nonzero = symmetric_spectrum(matrix)
    inverse = tf.where(nonzero, 1.0 / tf.where(nonzero, eigenvalues, 1.0), 0.0)
    coords = tf.linalg.matvec(vectors, rhs, transpose_a=True) * inverse
    return tf.linalg.matvec(vectors, coords)


def _quadratic(gramian, x):
    """Row-wise x^T G x for a batch x (B, K)."""
    return tf.reduce_sum(tf.matmul(x, gramian) * x, axis=-1)


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
        momentum = tf.where(restart, 0.0, (t - 1.0) / t_new)
        return x_new, x_new + momentum * (x_new - x), tf.where(restart, 1.0, t_new)

    t0 = tf.ones_like(x0[:, :1])
    x, _, _ = tf.while_loop(
        lambda *_: True, body, (x0, x0, t0), maximum_iterations=iterations
    )
    return x


def _masked_system(gramian, free):
    """Batch of D G D + (I - D): G on the free block, the identity elsewhere."""
    free = tf.cast(free, tf.float32)
    eye = tf.eye(gramian.shape[0], dtype=tf.float32)
    return free[:, :, None] * free[:, None, :] * gramian + eye * (1.0 - free[:, None, :])


def _keep_better(gramian, x, candidate, feasible):
    """Per row, the candidate where it is feasible and not worse than x."""
    better = feasible & (_quadratic(gramian, candidate) <= _quadratic(gramian, x))
    return tf.where(better[:, None], candidate, x)


def solve_box_qp(gramian, lower, iterations=QP_ITERATIONS):
    """``argmin_{v >= lower} v^T G v`` for each row of ``lower`` (B, K).

    G is normalised first (the argmin does not depend on its scale).
    Accelerated projected gradient from ``v = lower``, then one exact solve on
    the face it identified (the free coordinates' gradient set to zero, the
    others held at their bound), kept when it is feasible and no worse: this
    gives the exact optimum (to ~1e-6) whenever the face is right, which it
    is for all but nearly degenerate problems. G = 0 gives ``v = lower``.
    """
    gramian = normalize_gramian(gramian)
    step = 1.0 / tf.maximum(tf.norm(gramian), 1e-12)  # ||G||_F >= lambda_max
    v = accelerated_projected_gradient(
        lambda x: tf.matmul(x, gramian),
        lambda x: tf.maximum(x, lower),
        lower,
        step,
        iterations,
    )
    free = (v - lower > 1e-5) | (tf.matmul(v, gramian) < -1e-5)
    held = tf.where(free, 0.0, lower)
    rhs = held - tf.where(free, tf.matmul(held, gramian), 0.0)
    candidate = pseudo_solve(_masked_system(gramian, free), rhs)
    feasible = tf.reduce_all(candidate >= lower - 1e-6, axis=-1)
    return _keep_better(gramian, v, tf.maximum(candidate, lower), feasible)


def project_simplex(x):
    """Row-wise Euclidean projection onto the probability simplex (Duchi et al. 2008)."""
    num = x.shape[-1]
    sorted_x = tf.sort(x, axis=-1, direction="DESCENDING")
    cumsum = tf.cumsum(sorted_x, axis=-1) - 1.0
    ranks = tf.range(1, num + 1, dtype=x.dtype)
    support = tf.reduce_sum(tf.cast(sorted_x - cumsum / ranks > 0, tf.int32), -1)
    theta = tf.gather(cumsum, support - 1, batch_dims=1) / tf.cast(support, x.dtype)
    return tf.maximum(x - theta[:, None], 0.0)


def solve_simplex_qp(gramian, iterations=QP_ITERATIONS):
    """``argmin_{w in simplex} w^T G w`` (the min-norm point of the convex hull).

    Same scheme as :func:`solve_box_qp`: accelerated projected gradient from
    the uniform point, then the exact KKT solve on the identified face
    (``G_FF w_F = lambda 1``, ``sum w_F = 1``). When the minimiser is not
    unique (singular G) the face solve uses the pseudo-inverse, e.g.
    uniform weights for identical gradients; G = 0 gives uniform weights.
    Returns (K,).
    """
    num = gramian.shape[0]
    gramian = normalize_gramian(gramian)
    step = 0.5 / tf.maximum(tf.norm(gramian), 1e-12)
    w = accelerated_projected_gradient(
        lambda x: 2.0 * tf.matmul(x, gramian),
        project_simplex,
        tf.fill([1, num], 1.0 / num),
        step,
        iterations,
    )
    free = (w > 1e-5) | (tf.matmul(w, gramian) < _quadratic(gramian, w)[:, None] - 1e-5)
    x = pseudo_solve(_masked_system(gramian, free), tf.cast(free, tf.float32))
    total = tf.reduce_sum(x, -1, keepdims=True)
    candidate = tf.math.divide_no_nan(x, total)
    feasible = (total[:, 0] > 0) & tf.reduce_all(candidate >= -1e-6, axis=-1)
    candidate = tf.maximum(candidate, 0.0)
    candidate /= tf.reduce_sum(candidate, -1, keepdims=True) + 1e-30
    return _keep_better(gramian, w, candidate, feasible)[0]
