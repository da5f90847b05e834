"""Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", ICML)."""

import tensorflow as tf

from keras_mtl.aggregators._common import finite_or_zero, prepare_gramian, xla_compiled
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

# Ridge on the normalised Gramian: without it 1/2 a^T G a - sum log a is
# unbounded below when G is singular (a zero gradient, opposing gradients).
NASH_RIDGE = 1e-6
NEWTON_STEPS = 50


@xla_compiled
def nash_mtl_weights(gramian, max_norm=1.0, normalize=True):
    """Nash-MTL task weights: ``a > 0`` with ``G a = 1/a`` (elementwise).

    ``a`` is the minimiser of the strictly convex, self-concordant
    ``f(a) = 1/2 a^T A a - sum_k log a_k`` with ``A = G / ||G||_F + 1e-6 I``
    (the official code and LibMTL also divide G by its Frobenius norm). It is
    found by 50 damped Newton steps ``a <- a - H^-1 grad f / (1 + lambda)``,
    ``lambda`` the Newton decrement, from ``a_k = A_kk^-1/2``; this step
    keeps ``a > 0`` and converges quadratically near the solution, so no
    external solver (cvxpy) is needed.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        max_norm: if set (> 0), ``a`` is scaled down so that
            ``||J^T a|| = sqrt(a^T G a) <= max_norm``, which is LibMTL's
            gradient clipping of the shared parameters (default 1.0 as there).
            ``None`` disables it.
        normalize: if False, return the solution of ``G a = 1/a`` on the raw G,
            ``a / sqrt(||G||_F)`` (the paper's unnormalised equation).

    Returns:
        float32 (K,) positive weights. Reusing old weights for several steps
        (``update_weights_every``) is the caller's job.

    Degenerate inputs: the 1e-6 ridge makes singular G well-posed: a zero
    gradient gets ``a_k = 1000`` (multiplying a zero vector), opposing
    collinear gradients get equal weights and ``d = 0``, identical gradients
    equal weights. All-zero and non-finite G give zero weights.
    Graph- and XLA-compatible.
    """
    gramian, ok = prepare_gramian(gramian)
    num = gramian.shape[0]
    scale = tf.norm(gramian)
    system = tf.math.divide_no_nan(gramian, scale) + NASH_RIDGE * tf.eye(num)

    def newton_step(alpha):
        gradient = tf.linalg.matvec(system, alpha) - 1.0 / alpha
        hessian = system + tf.linalg.diag(1.0 / alpha**2)
        step = tf.linalg.cholesky_solve(tf.linalg.cholesky(hessian), gradient[:, None])[:, 0]
        decrement = tf.sqrt(tf.maximum(tf.reduce_sum(gradient * step), 0.0))
        return (alpha - step / (1.0 + decrement),)

    (alpha,) = tf.while_loop(
        lambda _: True,
        newton_step,
        (tf.math.rsqrt(tf.linalg.diag_part(system)),),
        maximum_iterations=NEWTON_STEPS,
    )
    alpha = tf.where(scale > 0, alpha, 0.0)
    if not normalize:
        alpha = tf.math.divide_no_nan(alpha, tf.sqrt(scale))
    if max_norm is not None and max_norm > 0:
        norm = tf.sqrt(tf.maximum(tf.reduce_sum(tf.linalg.matvec(gramian, alpha) * alpha), 0.0))
        alpha *= tf.where(norm > max_norm, max_norm / tf.maximum(norm, 1e-30), 1.0)
    return finite_or_zero(alpha, ok)


@register("nash_mtl")
class NashMTL(GradientMethod):
    """Nash-MTL: the bargaining solution `α > 0` with `Gα = 1/α`, `d = Jᵀα`.

    Solved by a damped Newton method on the strictly convex
    `½αᵀGα − Σ log α` inside TensorFlow (see `nash_mtl_weights`), on the
    normalised Gramian as the reference code does (`normalize`); `max_norm`
    caps `‖d‖`; the weights are recomputed every `update_weights_every` steps
    and reused in between (kept in the model's state).

    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.

    Example:

    >>> keras_mtl.NashMTL({"a": "mse", "b": "mse"}, update_weights_every=1)
    """

    def __init__(self, losses=None, max_norm=1.0, normalize=True, update_weights_every=1, name=None):
        super().__init__(losses, name=name)
        if int(update_weights_every) < 1:
            raise ValueError(f"update_weights_every must be >= 1, got {update_weights_every}.")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.normalize = bool(normalize)
        self.update_weights_every = int(update_weights_every)

    def build_state(self, state, task_names):
        state.variable("nash_weights", (len(task_names),))
        state.variable("steps", (), dtype="int32")

    def task_weights(self, gradients, state, training):
        if not training:
            return tf.convert_to_tensor(state["nash_weights"])
        due = tf.equal(state["steps"] % self.update_weights_every, 0)
        state["steps"].assign_add(1)
        weights = tf.cond(
            due,
            lambda: nash_mtl_weights(gradients.gramian, self.max_norm, self.normalize),
            lambda: tf.convert_to_tensor(state["nash_weights"]),
        )
        state["nash_weights"].assign(weights)
        return weights

    def get_config(self):
        return {
            **super().get_config(),
            "max_norm": self.max_norm,
            "normalize": self.normalize,
            "update_weights_every": self.update_weights_every,
        }
