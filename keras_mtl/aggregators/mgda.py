"""MGDA (Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization")."""

from keras import ops

from keras_mtl.aggregators._common import (
    as_float64,
    diagonal,
    finite_or_zero,
    prepare_gramian,
    safe_sqrt,
    solve_simplex_qp,
    xla_compiled,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@xla_compiled
def mgda_weights(gramian, losses=None, normalization="none"):
    """MGDA task weights: the min-norm point of the convex hull of the gradients.

    The task gradients are first divided by ``n_k`` (LibMTL's ``mgda_gn``):
    ``"none"`` 1, ``"l2"`` ``||g_k||``, ``"loss"`` ``L_k``, ``"loss+"``
    ``L_k ||g_k||``. Then ``w* = argmin_{w in simplex} w^T G_n w`` with
    ``G_n = N^-1 G N^-1``, and the update is LibMTL's
    ``d = sum_k w*_k g_k / n_k``. The returned weights apply to the ORIGINAL
    gradients: ``w_k = w*_k / n_k``. The QP is solved in float64 on the
    Jacobi-scaled Gramian by ``_common.solve_simplex_qp``: exactly for
    K <= 8 (every support's KKT system, the least feasible objective), by
    accelerated projected gradient and an exact face solve beyond.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        losses: (K,) non-negative task losses; required for "loss" and "loss+".
        normalization: one of "none", "l2", "loss", "loss+".

    Returns:
        float32 (K,) weights.

    Degenerate inputs: a task with ``n_k = 0`` (zero gradient under
    l2/loss+, zero loss) has a zero normalised gradient, which lies in the
    hull: all weights are 0 (``d = 0``, Pareto-stationary). Under "none" a
    zero gradient likewise gives ``d = 0`` (weight 1 on it). Identical
    gradients give uniform weights (the least-norm minimiser); opposing
    collinear ones the weights that cancel them (``d = 0``); all-zero G gives
    uniform weights. Non-finite G or losses, and a negative loss under
    "loss"/"loss+" (it would turn the task's weight negative: gradient
    ascent), give zero weights; `MGDA` declares ``needs_non_negative_losses``
    so that the engine refuses such losses first. XLA-compiled on every backend.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = mgda_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([0.6, 0.4], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.2, 0.4])
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if normalization in ("loss", "loss+") and losses is None:
        raise ValueError(f"normalization={normalization!r} needs the losses")
    gramian, ok = prepare_gramian(gramian)
    norms = safe_sqrt(diagonal(gramian))
    if normalization == "none":
        scale = ops.ones_like(norms)
    elif normalization == "l2":
        scale = norms
    else:
        losses = as_float64(losses)
        valid = ops.all(ops.isfinite(losses)) & ops.all(losses >= 0)
        ok = ops.logical_and(ok, valid)
        scale = losses * norms if normalization == "loss+" else losses
    inverse = ops.divide_no_nan(ops.ones_like(scale), ops.where(ok, scale, 0.0))
    weights = solve_simplex_qp(gramian * inverse[:, None] * inverse[None, :]) * inverse
    return finite_or_zero(weights, ok)


@register("mgda")
class MGDA(GradientMethod):
    r"""MGDA: the min-norm point of the convex hull of the task gradients.

    $$
    w = \operatorname*{arg\,min}_{w \in \Delta_K} w^\top G w, \qquad d = J^\top w,
    $$

    $\Delta_K$ the simplex, optionally on normalised gradients
    (`normalization`: "none", "l2", "loss" or "loss+"), the weights then
    applying to the original ones. With `representation=` on the model this
    is MGDA-UB (gradients of the shared representation).

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        normalization: how the gradients are normalised first, as LibMTL's `mgda_gn`: `"none"` (default, the
            paper's), `"l2"`, `"loss"` or `"loss+"`.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.MGDA({"a": "mse", "b": "mse"}, normalization="l2")
    """

    def __init__(self, losses=None, normalization="none", name=None):
        super().__init__(losses, name=name)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
        self.normalization = normalization

    @property
    def needs_non_negative_losses(self):
        """The loss normalisations divide by the losses: a negative one flips a task's gradient."""
        return self.normalization in ("loss", "loss+")

    def gradient_weights(self, gradients, state, training):
        return mgda_weights(gradients.gramian, gradients.losses, self.normalization), {}

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization}
