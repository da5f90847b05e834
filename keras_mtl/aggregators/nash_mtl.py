"""Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", ICML)."""

from keras import ops

from keras_mtl.aggregators._common import (
    cholesky_solve,
    clip_update_norm,
    finite_or_zero,
    lifted_jacobi_system,
    matvec,
    prepare_gramian,
    quadratic,
    safe_sqrt,
    xla_compiled,
)
from keras_mtl.arguments import Boolean, Integer, Real, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

NEWTON_STEPS = 60


def _damped_newton(system):
    """``b > 0`` with ``A b = 1/b``: the minimiser of ``1/2 b^T A b - sum log b``.

    Damped Newton steps ``b <- b - H^-1 grad / (1 + lambda)`` (``lambda`` the
    Newton decrement) keep b > 0 and converge quadratically near the
    solution (the function is self-concordant); the start ``b = t 1`` is the
    best point on that ray, ``t = sqrt(K / 1^T A 1)``.
    """
    num = system.shape[0]
    ones = ops.ones((num,), system.dtype)

    def newton_step(_, beta):
        gradient = matvec(system, beta) - 1.0 / beta
        hessian = system + ops.diag(1.0 / beta**2)
        step = cholesky_solve(hessian, gradient)
        decrement = safe_sqrt(ops.sum(gradient * step))
        return beta - step / (1.0 + decrement)

    start = ops.sqrt(num / quadratic(system, ones)) * ones
    return ops.fori_loop(0, NEWTON_STEPS, newton_step, start)


@xla_compiled
def nash_mtl_weights(gramian, max_norm=1.0, normalize=False):
    """Nash-MTL task weights: ``a > 0`` with ``G a = 1/a`` (elementwise).

    This is the paper's bargaining equation, and what the authors' code
    (AvivNavon/nash-mtl, ``NashMTL``) and LibMTL return: they divide G by
    ``||G||_F`` for their solver but put the factor back in the constraint
    ``a_k ||G||_F (G a / ||G||_F)_k >= 1``, so their weights solve the
    equation on the raw G (they stop after at most 20 cvxpy/ECOS
    iterations of a linearised problem, warm-started from the previous step;
    keras_mtl solves it to float64 precision every time).

    With ``a = s * b`` (``s = 1/||g_k||``) the equation becomes ``G_s b = 1/b``
    on the Jacobi-scaled Gramian (unit diagonal, see ``_common``), solved in
    float64 by damped Newton on the strictly convex, self-concordant
    ``1/2 b^T G_s b - sum log b`` (60 steps; no external solver).

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        max_norm: if set (> 0), ``a`` is scaled down so that
            ``||J^T a|| = sqrt(a^T G a) <= max_norm``, which is the reference
            code's gradient clipping of the shared parameters (default 1.0 as
            there). At the solution ``a^T G a = K``, so for K >= 2 the clip
            is always active. ``None`` disables it.
        normalize: keras_mtl's option, not in the reference: if True, solve
            the equation on ``G / ||G||_F`` instead, i.e. return
            ``a sqrt(||G||_F)`` (weights independent of the gradients' scale).

    Returns:
        float32 (K,) positive weights. Reusing old weights for several steps
        (``update_weights_every``) is the caller's job.

    Degenerate inputs: the equation has a solution exactly when 0 is not in
    the convex hull of the gradients (and G_s is positive definite then,
    unless K > P). A zero gradient gets weight 0 and the others are solved
    among themselves. A G_s singular at float32 resolution (smallest
    eigenvalue <= ``K 2^-23``: opposing collinear gradients, K > P) is
    lifted to that eigenvalue (``_common.lifted_jacobi_system``): opposing collinear
    gradients then get equal, large weights with ``d = 0``; identical
    gradients get ``a_k = 1 / (||g|| sqrt(K))``. All-zero and non-finite G
    give zero weights. XLA-compiled on every backend.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = nash_mtl_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([1.3066, 0.9239], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.3827, 0.9239])
    """
    gramian, ok = prepare_gramian(gramian)
    system, inverse_norms = lifted_jacobi_system(gramian)
    alpha = _damped_newton(system) * inverse_norms
    if normalize:
        alpha = alpha * ops.sqrt(ops.sqrt(ops.sum(gramian**2)))
    return finite_or_zero(clip_update_norm(gramian, alpha, max_norm), ok)


@register("nash_mtl")
@declare_arguments(
    max_norm=Real(minimum=0, minimum_open=True, optional=True),
    normalize=Boolean(),
    update_weights_every=Integer(minimum=1),
)
class NashMTL(GradientMethod):
    r"""Nash-MTL: the bargaining solution `α > 0` with `Gα = 1/α`, `d = Jᵀα`.

    $$
    G \alpha = 1 / \alpha, \quad \alpha > 0, \qquad d = J^\top \alpha
    $$

    Solved by a damped Newton method on the strictly convex
    `½αᵀGα − Σ log α` in float64, in the training step (see `nash_mtl_weights`);
    like the reference code the weights solve the equation on the raw
    Gramian (`normalize=True` solves it on `G/‖G‖_F` instead); `max_norm`
    caps `‖d‖`; the weights are recomputed every `update_weights_every` steps
    and reused in between (kept in the model's state).

    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        max_norm: cap on `‖d‖`, default 1.0 (the reference code's); None for no cap.
        normalize: solve on `G/‖G‖_F` instead of the raw Gramian, default False (the reference code's).
        update_weights_every: recompute the weights every this many steps, reusing them in between, default 1.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.NashMTL({"a": "mse", "b": "mse"}, update_weights_every=1)
    """

    def __init__(self, losses=None, max_norm=1.0, normalize=False, update_weights_every=1, name=None):
        super().__init__(losses, name=name)
        self.max_norm = max_norm
        self.normalize = normalize
        self.update_weights_every = update_weights_every

    def build_state(self, state, task_names):
        state.variable("nash_weights", (len(task_names),))
        state.variable("steps", (), dtype="int32")

    def gradient_weights(self, gradients, state, training):
        previous = state["nash_weights"]
        if not training:
            return previous, {}
        # One solve every `update_weights_every` steps (the first included); the cond skips the others' cost.
        weights = ops.cond(
            ops.equal(state["steps"] % self.update_weights_every, 0),
            lambda: nash_mtl_weights(gradients.gramian, self.max_norm, self.normalize),
            lambda: previous,
        )
        return weights, {"nash_weights": weights, "steps": state["steps"] + 1}

    def get_config(self):
        return {
            **super().get_config(),
            "max_norm": self.max_norm,
            "normalize": self.normalize,
            "update_weights_every": self.update_weights_every,
        }
