"""IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning", ICLR)."""

from keras import ops

from keras_mtl.aggregators._common import (
    finite_or_zero,
    float64_function,
    jacobi_scale,
    null_tolerance,
    prepare_gramian,
    pseudo_solve,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@float64_function
def imtl_g_weights(gramian):
    """IMTL-G task weights: equal projection of ``d`` on every unit gradient.

    We need ``d = J^T a`` with ``sum a = 1`` and ``d.u_k`` equal for all k,
    ``u_k = g_k / ||g_k||``. Since ``d.u_k = (G a)_k / ||g_k||``, this is
    ``G a = c n`` with ``n_k = ||g_k||``; with ``a = s * b`` (``s = 1/n``) it
    becomes ``G_s b = c 1`` on the Jacobi-scaled Gramian (unit diagonal, see
    ``_common``): ``b = G_s^+ 1``, ``a = s * b / sum(s * b)``, the paper's
    ``a_{2:K} = g_1 U^T (D U^T)^-1`` from G alone. The solve is in float64,
    G_s^+ dropping eigenvalues <= ``K 2^-23`` (the float32 resolution of G).
    If ``sum(s * b) < 0`` the equal projections are negative: the paper's
    equation then asks for an update that conflicts with every task, and
    this is what is returned.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.

    Returns:
        float32 (K,) weights, summing to 1 (or all 0, below).

    Degenerate inputs: a zero gradient gets weight 0 and the others are
    solved among themselves. A rank-deficient G has in general no exact
    solution: G_s^+ gives the least-squares one, whose projections
    ``d.u_k`` are proportional to the orthogonal projection of 1 onto the
    range of G_s (all equal when 1 lies in it, e.g. identical gradients:
    uniform weights). If ``sum(s * b) = 0`` the weights are 0 (``d = 0``):
    opposing collinear gradients of any sizes (1 is then in the null space
    of G_s; ``d = 0`` has equal zero projections), G = 0, and non-finite G.
    A plain graph on TensorFlow, XLA on JAX.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = imtl_g_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([0.5858, 0.4142], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.1716, 0.4142])
    """
    gramian, ok = prepare_gramian(gramian)
    scaled, inverse_norms = jacobi_scale(gramian)
    ones = ops.cast(inverse_norms > 0, "float64")
    direction = pseudo_solve(scaled, ones, null_tolerance(gramian.shape[0])) * inverse_norms
    return finite_or_zero(ops.divide_no_nan(direction, ops.sum(direction)), ok)


@register("imtl_g")
class IMTLG(GradientMethod):
    r"""IMTL-G: the update with equal projections on every unit task gradient.

    $$
    d = J^\top \alpha, \quad \sum_k \alpha_k = 1, \qquad d^\top \frac{g_k}{\lVert g_k \rVert} \text{ equal for every } k
    $$

    Weights α with `Σα = 1` such that `d = Jᵀα` projects equally on every
    `g_k/‖g_k‖` (closed form, see `imtl_g_weights`).

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.IMTLG({"a": "mse", "b": "mse"})
    """

    def gradient_weights(self, gradients, state, training):
        return imtl_g_weights(gradients.gramian), {}
