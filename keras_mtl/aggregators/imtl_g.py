"""IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning", ICLR)."""

import tensorflow as tf

from keras_mtl.aggregators._common import (
    finite_or_zero,
    normalize_gramian,
    prepare_gramian,
    pseudo_solve,
    safe_sqrt,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


def imtl_g_weights(gramian):
    """IMTL-G task weights: equal projection of ``d`` on every unit gradient.

    We need ``d = J^T a`` with ``sum a = 1`` and ``d.u_k`` equal for all k,
    ``u_k = g_k / ||g_k||``. Since ``d.u_k = (G a)_k / ||g_k||``, this is
    ``G a = c n`` with ``n_k = ||g_k||``, so the closed form is
    ``a = G^-1 n / (1^T G^-1 n)``, the same as the paper's
    ``a_{2:K} = g_1 U^T (D U^T)^-1`` but from G alone. G^-1 is the
    pseudo-inverse (eigenvalues <= 1.2e-6 K lambda_max dropped).

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.

    Returns:
        float32 (K,) weights, summing to 1.

    Degenerate inputs: with the pseudo-inverse a zero gradient gets weight 0
    and the others are solved among themselves; identical gradients give
    uniform weights. If ``1^T G^+ n = 0`` the weights are 0 (``d = 0``): this
    covers opposing collinear gradients (n lies in the null space of G; any
    ``d = 0`` has equal zero projections) and G = 0, as well as non-finite G. Graph- and XLA-compatible.
    """
    gramian, ok = prepare_gramian(gramian)
    gramian = normalize_gramian(gramian)
    norms = safe_sqrt(tf.linalg.diag_part(gramian))
    direction = pseudo_solve(gramian, norms)
    return finite_or_zero(tf.math.divide_no_nan(direction, tf.reduce_sum(direction)), ok)


@register("imtl_g")
class IMTLG(GradientMethod):
    """IMTL-G: the update with equal projections on every unit task gradient.

    Weights α with `Σα = 1` such that `d = Jᵀα` projects equally on every
    `g_k/‖g_k‖` (closed form, see `imtl_g_weights`).

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.

    Example:

    >>> keras_mtl.IMTLG({"a": "mse", "b": "mse"})
    """

    def task_weights(self, gradients, state, training):
        return imtl_g_weights(gradients.gramian)
