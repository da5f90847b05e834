"""CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS)."""

import tensorflow as tf

from keras_mtl.aggregators._common import (
    QP_ITERATIONS,
    accelerated_projected_gradient,
    finite_or_zero,
    normalize_gramian,
    prepare_gramian,
    project_simplex,
    safe_sqrt,
    xla_compiled,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

# Smoothing of ||g_w|| = sqrt(w^T G w + eps) in the inner problem (on the
# normalised G); it also bounds the curvature used for the step size.
_SMOOTHING = 1e-6
_ZERO_NORM = 1e-3  # sqrt(_SMOOTHING)


@xla_compiled
def cagrad_weights(gramian, c=0.4):
    """CAGrad task weights.

    With ``g0 = mean_k g_k`` and ``phi = c^2 ||g0||^2``, solve
    ``w* = argmin_{w in simplex} g_w^T g0 + sqrt(phi) ||g_w||``
    (``g_w = J^T w``; in Gramian form ``w^T G a + sqrt(phi) sqrt(w^T G w)``,
    ``a = 1/K``), then ``d = (g0 + sqrt(phi)/||g_w*|| g_w*) / (1 + c^2)``,
    returned as weights ``w = (a + sqrt(phi)/||g_w*|| w*) / (1 + c^2)``.
    The inner problem is solved on the normalised G by accelerated projected
    gradient (300 fixed iterations, ``||g_w||`` smoothed by 1e-6): accurate to
    about 1e-4 in the objective, like the official SLSQP solve. c = 0 gives
    the mean exactly.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        c: conflict-aversion radius, default 0.4 (Liu et al.).

    Returns:
        float32 (K,) weights.

    Degenerate inputs: when ``||g_w*|| <= 1e-3`` times the RMS task-gradient
    norm (0 in the convex hull, e.g. opposing collinear gradients) the
    correction term is dropped and
    ``d = g0 / (1 + c^2)``; identical gradients give
    ``w = (1 + c) / (K (1 + c^2))`` (``d = (1 + c) g / (1 + c^2)``); all-zero G
    gives ``w = 1/(K (1 + c^2))``; non-finite G gives zero weights.
    Graph- and XLA-compatible.
    """
    gramian, ok = prepare_gramian(gramian)
    gramian = normalize_gramian(gramian)
    num = gramian.shape[0]
    mean = tf.fill([1, num], 1.0 / num)
    linear = tf.matmul(mean, gramian)
    radius = c * safe_sqrt(tf.reduce_sum(linear * mean))

    def gradient(w):
        gram_w = tf.matmul(w, gramian)
        norm = tf.sqrt(tf.maximum(tf.reduce_sum(gram_w * w, -1, keepdims=True), 0.0) + _SMOOTHING)
        return linear + radius * gram_w / norm

    # Hessian of radius * sqrt(w^T G w + eps) <= radius G / sqrt(eps_lb), with
    # w^T G w >= lambda_min(G) / K on the simplex.
    eigenvalues = tf.linalg.eigvalsh(gramian)
    floor = tf.maximum(eigenvalues[0], 0.0) / num + _SMOOTHING
    lipschitz = eigenvalues[-1] * (1.0 + radius * tf.math.rsqrt(floor))
    w_star = accelerated_projected_gradient(
        gradient, project_simplex, mean, 1.0 / tf.maximum(lipschitz, 1e-12), QP_ITERATIONS
    )[0]
    norm_star = safe_sqrt(tf.reduce_sum(tf.linalg.matvec(gramian, w_star) * w_star))
    # Below the smoothing scale g_w* is numerically zero and has no direction.
    correction = tf.where(norm_star > _ZERO_NORM, radius / tf.maximum(norm_star, _ZERO_NORM), 0.0)
    weights = (mean[0] + correction * w_star) / (1.0 + c**2)
    return finite_or_zero(weights, ok)


@register("cagrad")
class CAGrad(GradientMethod):
    """CAGrad: the average gradient, corrected towards the worst-off task.

    `w* = argmin_{w∈Δ} g_wᵀḡ + c‖ḡ‖‖g_w‖`, `d = (ḡ + c‖ḡ‖/‖g_w*‖ · g_w*) / (1 + c²)`
    (see `cagrad_weights`); c = 0 gives the mean.

    Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning",
    NeurIPS 2021; c = 0.4.

    Example:

    >>> keras_mtl.CAGrad({"a": "mse", "b": "mse"}, c=0.4)
    """

    def __init__(self, losses=None, c=0.4, name=None):
        super().__init__(losses, name=name)
        if not c >= 0:
            raise ValueError(f"c must be >= 0, got {c}.")
        self.c = float(c)

    def task_weights(self, gradients, state, training):
        return cagrad_weights(gradients.gramian, self.c)

    def get_config(self):
        return {**super().get_config(), "c": self.c}
