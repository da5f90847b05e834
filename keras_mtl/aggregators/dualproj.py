"""DualProj (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization")."""

from keras import ops

from keras_mtl.aggregators._common import finite_or_zero, prepare_gramian, solve_box_qp, xla_compiled
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@xla_compiled
def dualproj_weights(gramian):
    """DualProj task weights: ``w = argmin_{v >= 1/K} v^T G v``.

    ``J^T w`` is the projection of the mean gradient onto the dual cone
    ``{x : J x >= 0}``: the update conflicts with no task (``G w >= 0``).
    Solved in float64 on the Jacobi-scaled Gramian by
    ``_common.solve_box_qp`` (exact for K <= 8, iterative with an exact face
    solve beyond), so no task is treated as null because another is large.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.

    Returns:
        float32 (K,) weights.

    Degenerate inputs: identical gradients and all-zero G give ``w = 1/K``;
    opposing collinear gradients give ``d = 0``; non-finite G gives zero
    weights. XLA-compiled on every backend.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = dualproj_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([0.5, 0.5], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0. , 0.5])
    """
    gramian, ok = prepare_gramian(gramian)
    num = gramian.shape[0]
    weights = solve_box_qp(gramian, ops.full((1, num), 1.0 / num, dtype="float64"))[0]
    return finite_or_zero(weights, ok)


@register("dualproj")
class DualProj(GradientMethod):
    r"""DualProj: the mean gradient projected onto the dual cone, `w = argmin_{v ≥ 1/K} vᵀGv`.

    $$
    w = \operatorname*{arg\,min}_{v \ge \mathbf{1}/K} v^\top G v, \qquad d = J^\top w
    $$

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.DualProj({"a": "mse", "b": "mse"})
    """

    def gradient_weights(self, gradients, state, training):
        return dualproj_weights(gradients.gramian), {}
