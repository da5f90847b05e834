"""Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task Learning")."""

from keras import ops

from keras_mtl.aggregators._common import (
    finite_or_zero,
    float64_function,
    jacobi_scale,
    matvec,
    null_tolerance,
    prepare_gramian,
    safe_sqrt,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


def numerical_rank(gramian):
    """Rank of G: the eigenvalues of the Jacobi-scaled G_s above ``null_tolerance(K)``.

    Scale-free: a small task's direction counts however large the others are.
    """
    scaled, _ = jacobi_scale(gramian)
    eigenvalues = ops.eigh(scaled)[0]
    return ops.sum(ops.cast(eigenvalues > null_tolerance(gramian.shape[0]), "int32"))


def _alignment_matrix(gramian):
    """B = sigma_min V Lambda^-1/2 V^T on the r largest eigen-directions of G (float64).

    r is the numerical rank (``numerical_rank``), so the rows of ``B J`` are
    the aligned gradients: ``B G B^T = sigma_min^2 P`` with P the projector
    onto the kept eigen-directions (the identity at full rank).
    """
    num = gramian.shape[0]
    eigenvalues, vectors = ops.eigh(gramian)
    kept = (ops.arange(num, dtype="int32") >= num - numerical_rank(gramian)) & (eigenvalues > 0)
    inverse_sqrt = ops.where(kept, ops.rsqrt(ops.where(kept, eigenvalues, 1.0)), 0.0)
    sigma_min = safe_sqrt(ops.min(ops.where(kept, eigenvalues, ops.max(eigenvalues))))
    return sigma_min * ops.matmul(vectors * inverse_sqrt, ops.transpose(vectors))


@float64_function
def aligned_mtl_weights(gramian):
    """Aligned-MTL task weights: ``w = sigma_min V Lambda^-1/2 V^T (1/K)``.

    With ``G = V Lambda V^T`` (float64), the task gradients are replaced by an
    orthogonal, equal-norm system ``B J`` (norm ``sigma_min``, the smallest
    kept singular value of J), and the update is their mean,
    ``d = J^T B^T 1/K``. Only the r largest eigen-directions are kept, r the
    rank of the Jacobi-scaled Gramian at float32 resolution (its eigenvalues
    above ``K 2^-23``, see ``_common``): a task's direction is never dropped
    because another task is large, and a full-rank G keeps all K however
    ill-conditioned its row scales make it. The notes' ``1/K`` is used; the
    official code and LibMTL sum instead (K times larger).

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.

    Returns:
        float32 (K,) weights.

    Degenerate inputs: rank-deficient G (identical, collinear or zero
    gradients, K > P) keeps its r non-null directions: identical gradients
    give ``w = 1/K`` (``d = g``), opposing collinear ones ``w = 0``; all-zero
    and non-finite G give zero weights. A plain graph on TensorFlow, XLA on JAX.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = aligned_mtl_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([0.5528, 0.4146], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.1382, 0.4146])
    """
    gramian, ok = prepare_gramian(gramian)
    num = gramian.shape[0]
    weights = matvec(_alignment_matrix(gramian), ops.full((num,), 1.0 / num, dtype="float64"))
    return finite_or_zero(weights, ok)


@register("aligned_mtl")
class AlignedMTL(GradientMethod):
    """Aligned-MTL: align the task gradients into an orthogonal, equal-norm system.

    From `G = VΛVᵀ`, `w = σ_min V Λ^{-1/2} Vᵀ (1/K)` with null directions
    dropped (see `aligned_mtl_weights`).

    Senushkin et al., "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.AlignedMTL({"a": "mse", "b": "mse"})
    """

    def gradient_weights(self, gradients, state, training):
        return aligned_mtl_weights(gradients.gramian), {}
