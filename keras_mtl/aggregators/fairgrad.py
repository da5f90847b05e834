"""FairGrad (Ban & Ji 2024, "Fair Resource Allocation in Multi-Task Learning", ICML)."""

from keras import ops

from keras_mtl.aggregators._common import (
    cholesky_solve,
    clip_update_norm,
    diagonal,
    finite_or_zero,
    lifted_jacobi_system,
    matvec,
    prepare_gramian,
    xla_compiled,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

FLOAT64_EPS = 2.0**-52
# Stop when every task's residual is below this fraction of w_k^(-1/alpha)
# (plus the float64 rounding of (G w)_k), or after NEWTON_STEPS steps.
RELATIVE_TOLERANCE = 1e-10
NEWTON_STEPS = 100
# Bisection steps of the line search: the step is found to 2^-60 of its bracket.
BISECTIONS = 60


def _fairness_system(gramian):
    """``(A, zero)``: G made solvable, and the mask of zero gradients.

    ``A = D^1/2 G_lifted D^1/2`` with ``G_lifted`` from
    ``_common.lifted_jacobi_system`` (a zero gradient's row and column
    become ``e_k``, its equation ``w_k = w_k^(-1/alpha)`` decoupled and its
    weight set to 0 afterwards; a G_s singular at float32 resolution lifted
    to it, like Nash-MTL's). A positive definite G_s is left as it is.
    """
    system, inverse_norms = lifted_jacobi_system(gramian)
    zero = inverse_norms == 0
    norms = ops.where(zero, 1.0, 1.0 / ops.where(zero, 1.0, inverse_norms))
    return system * norms[:, None] * norms[None, :], zero


def _gradient(system, weights, alpha):
    """``grad f(w) = A w - w^(-1/alpha)`` of ``f(w) = 1/2 w^T A w - sum_k phi(w_k)``, ``phi' = w^(-1/alpha)``."""
    return matvec(system, weights) - weights ** (-1.0 / alpha)


def _newton_direction(system, weights, alpha):
    """``-H^-1 grad f`` with ``H = A + diag(w^(-1/alpha - 1) / alpha)``, solved Jacobi-scaled (H is SPD)."""
    hessian = system + ops.diag(weights ** (-1.0 / alpha - 1.0) / alpha)
    scale = ops.rsqrt(diagonal(hessian))
    rhs = -_gradient(system, weights, alpha) * scale
    return cholesky_solve(hessian * scale[:, None] * scale[None, :], rhs) * scale


def _line_search(system, weights, direction, alpha):
    """A step ``t`` in (0, 1] along ``direction`` that keeps w > 0 and decreases f.

    ``psi(t) = f(w + t d)`` is convex with ``psi'(0) < 0`` and ``psi' -> +inf``
    where a weight reaches 0, so its minimiser on the bracket
    ``[0, min(1, 0.999 t_0)]`` (``t_0`` where the first weight reaches 0) is
    found by bisection on the sign of ``psi'``: the full Newton step when
    ``psi'`` is still <= 0 at the bracket's end (so convergence stays
    quadratic), else the largest step known to have ``psi' <= 0``.
    """

    def slope(step):
        return ops.sum(_gradient(system, weights + step * direction, alpha) * direction)

    shrinking = direction < 0
    boundary = ops.min(ops.where(shrinking, -weights / ops.where(shrinking, direction, -1.0), 2.0))
    upper = ops.minimum(1.0, 0.999 * boundary)

    def bisect(_, bracket):
        low, high = bracket
        middle = 0.5 * (low + high)
        descending = slope(middle) <= 0  # NaN or inf (overflow near w = 0): too far
        return ops.where(descending, middle, low), ops.where(descending, high, middle)

    low, _ = ops.fori_loop(0, BISECTIONS, bisect, (ops.zeros_like(upper), upper))
    return ops.where(slope(upper) <= 0, upper, low)


def _converged(system, weights, alpha):
    """Every ``|(A w)_k - w_k^(-1/alpha)|`` within RELATIVE_TOLERANCE of ``w_k^(-1/alpha)``, up to rounding."""
    target = weights ** (-1.0 / alpha)
    rounding = 16 * FLOAT64_EPS * matvec(ops.abs(system), weights)
    residual = ops.abs(matvec(system, weights) - target)
    return ops.all(residual <= RELATIVE_TOLERANCE * target + rounding)


def solve_fairness(system, alpha):
    """``w > 0`` with ``A w = w^(-1/alpha)``: the minimiser of a strictly convex f (see ``_gradient``).

    Damped Newton from the solution for orthogonal gradients,
    ``w_k = A_kk^(-alpha / (alpha + 1))``, with an exact line search
    (``_line_search``), until ``_converged`` or NEWTON_STEPS steps.
    Newton's method is affine-invariant, so the gradients' scales do not
    change the iterates; each Newton system is solved Jacobi-scaled.
    """
    start = diagonal(system) ** (-alpha / (alpha + 1.0))

    def newton_step(weights):
        direction = _newton_direction(system, weights, alpha)
        return (weights + _line_search(system, weights, direction, alpha) * direction,)

    (weights,) = ops.while_loop(
        lambda w: ops.logical_not(_converged(system, w, alpha)), newton_step, (start,), maximum_iterations=NEWTON_STEPS
    )
    return weights


@xla_compiled
def fairgrad_weights(gramian, alpha=1.0, max_norm=None):
    """FairGrad task weights: ``w > 0`` with ``(G w)_k = w_k^(-1/alpha)`` for every task.

    Ban & Ji's alpha-fair update (their Eq. 4, as in the authors' code
    OptMN-Lab/fairgrad ``FairGrad.fairgrad``, LibMTL and TorchJD): the
    direction ``d = J^T w`` whose task improvements ``g_k . d = (G w)_k``
    maximise the alpha-fair utility ``sum_k (g_k . d)^(1 - alpha) / (1 -
    alpha)`` (``sum_k log(g_k . d)`` at alpha = 1) over a ball, the
    optimality condition being the equation above. Special cases:
    alpha = 1 is Nash-MTL's bargaining equation ``G w = 1/w`` (proportional
    fairness); alpha -> infinity gives ``G w = 1``, equal improvements
    (max-min fairness, when ``G^-1 1 > 0``); alpha -> 0 gives ``w = 1``
    (the sum of the gradients, linear scalarisation), returned exactly for
    alpha = 0 (TorchJD returns 1/K there: the same direction).

    The reference codes minimise ``||G w - w^(-1/alpha)||^2`` with scipy's
    ``least_squares`` (bounds ``w >= 0``, from ``w = 1/K``); here the
    equation is the stationarity condition of the strictly convex
    ``f(w) = 1/2 w^T G w - sum_k phi(w_k)``, ``phi'(w) = w^(-1/alpha)``
    (``log w`` at alpha = 1), solved in float64 by damped Newton with an
    exact line search (``solve_fairness``) until every task's residual is
    within 1e-10 of ``w_k^(-1/alpha)`` (plus float64 rounding). A relative
    tolerance per task: rescaling one task's gradient does not loosen
    another's. The weights are not scale-free: scaling every gradient by c
    scales w by ``c^(-2 alpha / (alpha + 1))``.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        alpha: fairness, >= 0 (1.0 is the default of the authors' class and
            LibMTL; the authors' experiments use 2.0).
        max_norm: if set (> 0), w is scaled down so that ``||J^T w|| <=
            max_norm``: the authors' code clips the shared gradient to 1.0
            (after multiplying it by K "to match the sum loss"); LibMTL and
            TorchJD do neither, nor does the default None.

    Returns:
        float32 (K,) positive weights (0 on zero gradients).

    Degenerate inputs: the equation has a solution when the Jacobi-scaled
    Gramian is positive definite; a zero gradient gets weight 0 and the
    others are solved among themselves; a Gramian singular at float32
    resolution (opposing collinear gradients, K > P) is lifted to that
    resolution first (``_fairness_system``), so e.g. opposing collinear
    gradients get large weights with ``d ~ 0``; all-zero and non-finite G
    give zero weights. XLA-compiled on every backend.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = fairgrad_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([1.8478, 1.3066], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.5412, 1.3066])
    """
    if not alpha >= 0:
        raise ValueError(f"FairGrad alpha must be >= 0, got {alpha}.")
    gramian, ok = prepare_gramian(gramian)
    system, zero = _fairness_system(gramian)
    weights = ops.ones_like(system[0]) if alpha == 0 else solve_fairness(system, float(alpha))
    weights = ops.where(zero, 0.0, weights)
    return finite_or_zero(clip_update_norm(gramian, weights, max_norm), ok)


@register("fairgrad")
class FairGrad(GradientMethod):
    r"""FairGrad: the alpha-fair update, `w > 0` with `(Gw)_k = w_k^(−1/α)`, `d = Jᵀw`.

    $$
    (G w)_k = w_k^{-1/\alpha}, \quad w > 0, \qquad d = J^\top w
    $$

    `α` sets the fairness between the tasks' improvements `g_k·d`: 0 sums
    the gradients, 1 is proportional fairness (Nash-MTL's equation), large
    `α` equalises the improvements (max-min fairness). Solved in float64 by
    damped Newton in the training step (see `fairgrad_weights`); `max_norm`
    optionally caps `‖d‖` as the authors' code does.

    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024
    (arXiv 2402.15638).

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        alpha: α > 0 of the α-fairness (1: proportional fairness), default 1.0.
        max_norm: cap on `‖d‖`, as the authors' code clips, default None (no cap).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.FairGrad({"a": "mse", "b": "mse"}, alpha=2.0)
    """

    def __init__(self, losses=None, alpha=1.0, max_norm=None, name=None):
        super().__init__(losses, name=name)
        alpha = float(alpha)
        if not 0 <= alpha < float("inf"):
            raise ValueError(f"FairGrad alpha must be >= 0 and finite, got {alpha}.")
        if max_norm is not None and not 0 < float(max_norm) < float("inf"):
            raise ValueError(f"FairGrad max_norm must be > 0 and finite (or None), got {max_norm}.")
        self.alpha = alpha
        self.max_norm = None if max_norm is None else float(max_norm)

    def gradient_weights(self, gradients, state, training):
        return fairgrad_weights(gradients.gramian, self.alpha, self.max_norm), {}

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "max_norm": self.max_norm}
