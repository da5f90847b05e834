"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization")."""

from keras import ops

from keras_mtl.aggregators._common import finite_or_zero, prepare_gramian, solve_box_qp, xla_compiled
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@xla_compiled
def upgrad_weights(gramian):
    """UPGrad task weights: ``w = mean_i argmin_{v >= e_i} v^T G v``.

    ``J^T argmin_{v >= e_i} v^T G v`` is the projection of ``g_i`` onto the
    dual cone ``{x : J x >= 0}``, so the update ``d = J^T w`` has a
    non-negative inner product with every task gradient (``G w >= 0``). The K
    problems are solved together in float64 on the Jacobi-scaled Gramian by
    ``_common.solve_box_qp``: exactly for K <= 8 (every free set's face
    solve, the least feasible objective), by accelerated projected gradient
    and an exact face solve beyond. Invariant to rescaling any task's
    gradient: a small task is never projected away because others are large.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.

    Returns:
        float32 (K,) weights.

    Degenerate inputs: identical gradients and all-zero G give ``w = 1/K``;
    a zero gradient changes nothing (its coordinate stays at the bound);
    when the minimiser is not unique (singular G) the update is;
    opposing collinear gradients give ``d = 0``; non-finite G gives zero
    weights. XLA-compiled on every backend.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = upgrad_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([1.  , 0.75], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.25, 0.75])
    """
    gramian, ok = prepare_gramian(gramian)
    projections = solve_box_qp(gramian, ops.eye(gramian.shape[0], dtype="float64"))
    return finite_or_zero(ops.mean(projections, 0), ok)


@register("upgrad")
class UPGrad(GradientMethod):
    r"""UPGrad: the mean of each task gradient's projection onto the dual cone.

    $$
    w = \frac{1}{K} \sum_{i=1}^{K} \operatorname*{arg\,min}_{v \ge e_i} v^\top G v, \qquad d = J^\top w,
    $$

    so the update never conflicts with a task gradient ($G w \ge 0$).

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.UPGrad({"a": "mse", "b": "mse"})
    """

    def gradient_weights(self, gradients, state, training):
        return upgrad_weights(gradients.gramian), {}
