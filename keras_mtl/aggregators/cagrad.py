"""CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS)."""

from keras import ops

from keras_mtl.aggregators._common import (
    EXACT_MAX_TASKS,
    QP_ITERATIONS,
    accelerated_projected_gradient,
    all_supports,
    finite_or_zero,
    least_objective,
    masked_system,
    matvec,
    null_tolerance,
    prepare_gramian,
    project_weighted_simplex,
    quadratic,
    regularized_solve,
    safe_sqrt,
    simplex_face_candidates,
    simplex_feasible,
    simplex_scaling,
    xla_compiled,
)
from keras_mtl.arguments import Real, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

# Smoothing of sqrt(u^T G_s u + eps) in the iterative inner solve (K > 8), in
# scaled units where every vertex of the simplex has u^T G_s u >= 1.
_SMOOTHING = 1e-8


def _objective(scaled, linear, radius, u):
    """``F(u) = linear^T u + radius sqrt(u^T G_s u)`` for a batch u (.., K)."""
    return ops.sum(linear * u, -1) + radius * safe_sqrt(quadratic(scaled, u))


def _stationary_candidates(scaled, c, linear, radius, free):
    """Stationary points of F on ``{c^T u = 1}`` restricted to each free set (M, K).

    Stationarity ``linear_F + r A u / rho = mu c_F`` (``A = G_s,FF``,
    ``rho = sqrt(u^T A u)``) gives ``u = (mu p - q) / sqrt(D)`` with
    ``p = A^+ c``, ``q = A^+ linear``, ``P = c.p``, ``Q = c.q``,
    ``R = linear.q``, ``D = Q^2 - P (R - r^2)`` and ``mu = (Q + sqrt(D)) / P``
    (the root with ``c^T u = 1 > 0``). Faces with ``D <= 0`` have no such
    point and give u = 0 (infeasible).
    """
    system = masked_system(scaled, free)
    p, q = regularized_solve(system, free * c), regularized_solve(system, free * linear)
    big_p = ops.sum(free * c * p, -1, keepdims=True)
    big_q = ops.sum(free * c * q, -1, keepdims=True)
    big_r = ops.sum(free * linear * q, -1, keepdims=True)
    root = safe_sqrt(big_q**2 - big_p * (big_r - radius**2))
    mu = ops.divide_no_nan(big_q + root, big_p)
    return ops.divide_no_nan(mu * p - q, root)


def _select(scaled, c, linear, radius, candidates):
    feasible = simplex_feasible(candidates, c)
    candidates = ops.maximum(candidates, 0.0)
    candidates = candidates / ops.sum(candidates * c, -1, keepdims=True)
    objective = _objective(scaled, linear, radius, candidates)
    return least_objective(objective[None], candidates[None], feasible[None])[0]


def _inner_exact(scaled, c, linear, radius):
    """K <= 8: the least feasible F over every support's stationary point and min-norm point.

    The min-norm points (``_common.simplex_face_candidates``) cover the
    optima where ``g_w = 0`` (F is not differentiable there) and singular
    faces; all candidates are feasible points, so the least is the optimum.
    """
    free = all_supports(c.shape[0])
    candidates = ops.concatenate(
        [
            _stationary_candidates(scaled, c, linear, radius, free),
            simplex_face_candidates(scaled, c, free),
        ],
        axis=0,
    )
    return _select(scaled, c, linear, radius, candidates)


def _inner_iterative(scaled, c, linear, radius):
    """K > 8: FISTA on the smoothed F, then the exact candidates of the identified face."""
    eigenvalues = ops.eigh(scaled)[0]
    # Hessian of r sqrt(u^T A u + eps) <= r A / sqrt(floor), with
    # u^T A u >= lambda_min / ||c||^2 on the plane c^T u = 1.
    floor = ops.maximum(eigenvalues[0], 0.0) / ops.sum(c**2) + _SMOOTHING
    lipschitz = ops.maximum(eigenvalues[-1] * (1.0 + radius * ops.rsqrt(floor)), 1e-12)

    def gradient(u):
        gram_u = ops.matmul(u, scaled)
        norm = ops.sqrt(ops.maximum(ops.sum(gram_u * u, -1, keepdims=True), 0.0) + _SMOOTHING)
        return linear + radius * gram_u / norm

    u = accelerated_projected_gradient(
        gradient,
        lambda x: project_weighted_simplex(x, c),
        (c / ops.sum(c**2))[None],
        1.0 / lipschitz,
        QP_ITERATIONS,
    )
    free = ops.cast(u > 1e-7 * ops.max(u), "float64")
    candidates = ops.concatenate(
        [
            u,
            _stationary_candidates(scaled, c, linear, radius, free),
            simplex_face_candidates(scaled, c, free),
        ],
        axis=0,
    )
    return _select(scaled, c, linear, radius, candidates)


@xla_compiled
def cagrad_weights(gramian, c=0.4):
    """CAGrad task weights.

    With ``g0 = mean_k g_k`` and ``phi = c^2 ||g0||^2``, solve the inner problem
    ``w* = argmin_{w in simplex} F(w) = g_w^T g0 + sqrt(phi) ||g_w||``
    (``g_w = J^T w``; in Gramian form ``w^T G a + sqrt(phi) sqrt(w^T G w)``,
    ``a = 1/K``), then ``d = (g0 + sqrt(phi)/||g_w*|| g_w*) / (1 + c^2)``,
    returned as weights ``w = (a + sqrt(phi)/||g_w*|| w*) / (1 + c^2)``, so
    that ``||(1 + c^2) d - g0|| = c ||g0||`` (the ball of Liu et al.).

    The inner problem is solved in float64, in ``u = w / c_k`` on the
    Jacobi-scaled Gramian (``_common.simplex_scaling``). K <= 8: exactly,
    comparing every support's closed-form stationary point and min-norm
    point; K > 8: accelerated projected gradient on F smoothed by 1e-8 (in
    scaled units), then the same closed forms on the face it identified.
    c = 0 gives the mean exactly.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        c: conflict-aversion radius, default 0.4 (Liu et al.).

    Returns:
        float32 (K,) weights.

    Degenerate inputs: when ``g_w* = 0`` at float32 resolution
    (``u^T G_s u <= K 2^-23 ||u||^2``: 0 in the convex hull, e.g. opposing
    collinear gradients or a zero gradient) it has no direction and the
    correction term is dropped: ``d = g0 / (1 + c^2)``; identical gradients
    give ``w = (1 + c) / (K (1 + c^2))`` (``d = (1 + c) g / (1 + c^2)``);
    all-zero G gives ``w = 1/(K (1 + c^2))``; non-finite G gives zero
    weights. XLA-compiled on every backend.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = cagrad_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([0.6034, 0.431 ], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.1724, 0.431 ])
    """
    gramian, ok = prepare_gramian(gramian)
    num = gramian.shape[0]
    mean = ops.full((num,), 1.0 / num, dtype="float64")
    scaled, unit, largest = simplex_scaling(gramian)
    # F scaled by largest^2: linear = largest^2 (unit * G a), radius = largest sqrt(phi).
    radius = c * safe_sqrt(quadratic(gramian, mean))
    linear = largest**2 * unit * matvec(gramian, mean)
    if num <= EXACT_MAX_TASKS:
        u = _inner_exact(scaled, unit, linear, largest * radius)
    else:
        u = _inner_iterative(scaled, unit, linear, largest * radius)
    w_star = u * unit
    has_direction = quadratic(scaled, u) > null_tolerance(num) * ops.sum(u**2)
    norm_star = safe_sqrt(quadratic(gramian, w_star))
    correction = ops.where(has_direction, ops.divide_no_nan(radius, norm_star), 0.0)
    weights = (mean + correction * w_star) / (1.0 + c**2)
    return finite_or_zero(weights, ok)


@register("cagrad")
@declare_arguments(c=Real(minimum=0))
class CAGrad(GradientMethod):
    r"""CAGrad: the average gradient, corrected towards the worst-off task.

    $$
    w^* = \operatorname*{arg\,min}_{w \in \Delta_K} g_w^\top \bar g + c \lVert \bar g \rVert \lVert g_w \rVert, \qquad d = \frac{1}{1 + c^2} \left( \bar g + \frac{c \lVert \bar g \rVert}{\lVert g_{w^*} \rVert} g_{w^*} \right)
    $$

    that is `w* = argmin_{w∈Δ} g_wᵀḡ + c‖ḡ‖‖g_w‖`, `d = (ḡ + c‖ḡ‖/‖g_w*‖ · g_w*) / (1 + c²)`, with `ḡ`
    the mean gradient and `g_w = Jᵀw` (see `cagrad_weights`); c = 0 gives the mean.

    Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning",
    NeurIPS 2021; c = 0.4.

    Departures: the division by `1 + c²` is the authors' code's default
    (`rescale=1`; the paper's Algorithm 1 has none), so the update is
    TorchJD's (which returns the paper's unscaled one) times `1/(1 + c²)`,
    0.862 at c = 0.4. Where `g_w* = 0` TorchJD returns zero weights, this
    `ḡ / (1 + c²)` (see `cagrad_weights`).

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        c: the size of the correction, c ≥ 0 (0 gives the mean gradient), default 0.4 (the paper's).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.CAGrad({"a": "mse", "b": "mse"}, c=0.4)
    """

    def __init__(self, losses=None, c=0.4, name=None):
        super().__init__(losses, name=name)
        self.c = c

    def gradient_weights(self, gradients, state, training):
        return cagrad_weights(gradients.gramian, self.c), {}

    def get_config(self):
        return {**super().get_config(), "c": self.c}
