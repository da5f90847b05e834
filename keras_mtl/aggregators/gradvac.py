"""GradVac (Wang et al. 2021, "Gradient Vaccine", ICLR)."""

from keras import ops

from keras_mtl.aggregators._common import (
    as_float64,
    diagonal,
    finite_or_zero,
    float64_function,
    prepare_gramian,
    random_orders,
    safe_sqrt,
    take_rows,
)
from keras_mtl.aggregators.pcgrad import draw_order_keys
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import RandomStream, draw_seed
from keras_mtl.registry import register

# Floor of sqrt(1 - target^2): a target cosine of +-1 would need an infinite step.
_MIN_TARGET_SINE = 1e-3


@float64_function
def gradvac_weights(gramian, ema, keys, beta=0.01):
    """GradVac task weights and the updated EMA of target cosines.

    PCGrad's loop with a target: for each task i, ``v = g_i``; for each j != i
    in a random order, ``phi = cos(v, g_j)`` (current v, as in the paper
    and LibMTL); if ``phi < phi_hat_ij``,
    ``v <- v + ||v|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    / (||g_j|| sqrt(1 - phi_hat^2)) g_j``, which raises cos(v, g_j) to
    phi_hat. Then ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi`` for every
    visited pair (Algorithm 1 of the paper; LibMTL only updates it when the
    adjustment fired). In Gramian form ``v_i = c_i^T J`` and ``w = sum_i c_i``.
    With all targets 0 the adjustment is PCGrad's projection, so
    ``gradvac_weights(G, 0, keys, beta)[0] == pcgrad_weights(G, keys)``.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        ema: (K, K) target cosines phi_hat (start at zeros; diagonal unused).
        keys: (K, K) U(0, 1) draws giving the orders, as for PCGrad.
        beta: EMA rate, default 0.01 (Wang et al.).

    Returns:
        ``(weights, new_ema)``, float32 (K,) and (K, K); computed in float64.

    Degenerate inputs: a pair where ``v`` or ``g_j`` is zero is skipped (no
    adjustment, EMA entry unchanged): cosines are undefined there. Targets are
    used with ``sqrt(1 - phi_hat^2)`` floored at 1e-3, so a target of +-1 gives
    a large but finite step. Non-finite EMA entries are reset to 0. A
    non-finite G gives zero weights and returns the EMA unchanged.
    Deterministic given the keys.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> keys = np.array([[0.0, 0.5], [0.5, 0.0]])
        >>> weights, ema = gradvac_weights(gramian, np.zeros((2, 2)), keys, beta=0.01)
        >>> np.round(np.asarray(weights), 4)  # targets 0: PCGrad's weights
        array([2. , 1.5], dtype=float32)
        >>> np.round(np.asarray(ema), 4)  # 0.01 × the cosines met
        array([[ 0.    , -0.0071],
               [-0.0071,  0.    ]], dtype=float32)
    """
    gramian, ok = prepare_gramian(gramian)
    ema = as_float64(ema)
    ema = ops.where(ops.isfinite(ema), ema, ops.zeros_like(ema))
    num = gramian.shape[0]
    orders = random_orders(keys)
    norms = safe_sqrt(diagonal(gramian))
    coeffs = ops.eye(num, dtype="float64")
    new_ema = ema
    for position in range(num - 1):
        j = orders[:, position]
        pair = ops.one_hot(j, num, dtype="float64")  # row i: the pair (i, j_i)
        coeffs_gram = ops.matmul(coeffs, gramian)
        v_norm = safe_sqrt(ops.sum(coeffs_gram * coeffs, -1))
        g_norm = ops.take(norms, j)
        defined = v_norm * g_norm > 0
        cos = ops.clip(ops.divide_no_nan(take_rows(coeffs_gram, j), v_norm * g_norm), -1.0, 1.0)
        target = take_rows(new_ema, j)
        target_sine = ops.maximum(safe_sqrt(1.0 - target**2), _MIN_TARGET_SINE)
        step = (
            v_norm
            * (target * safe_sqrt(1.0 - cos**2) - cos * target_sine)
            / ops.where(defined, g_norm * target_sine, 1.0)
        )
        step = ops.where(defined & (cos < target), step, 0.0)
        coeffs = coeffs + step[:, None] * pair
        updated = ops.where(defined, (1.0 - beta) * target + beta * cos, target)
        new_ema = ops.where(pair > 0, updated[:, None], new_ema)
    weights = finite_or_zero(ops.sum(coeffs, 0), ok)
    return weights, ops.cast(ops.where(ok, new_ema, ema), "float32")


@register("gradvac")
class GradVac(GradientMethod):
    """GradVac: raise each pair of task gradients to its target cosine.

    PCGrad's loop, but a pair whose cosine is below its running target
    `φ̂_ij` is moved up to it; the targets follow an EMA with rate `beta`
    (see `gradvac_weights`) and are saved with the model; the orders are
    drawn from `seed` by a random stream saved with the model.

    Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021; β = 0.01.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        beta: the EMA rate of the target cosines, in [0, 1], default 0.01 (the paper's).
        seed: seed of the random task orders, default None (drawn at random).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.GradVac({"a": "mse", "b": "mse"}, beta=0.01, seed=0)
    """

    def __init__(self, losses=None, beta=0.01, seed=None, name=None):
        super().__init__(losses, name=name)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}.")
        self.beta = float(beta)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        self.stream = RandomStream(state, "rng", self.seed)
        state.variable("target_cosines", (len(task_names), len(task_names)))

    def gradient_weights(self, gradients, state, training):
        keys, drawn = draw_order_keys(self.stream, state, gradients.gramian.shape[0])
        weights, targets = gradvac_weights(gradients.gramian, state["target_cosines"], keys, self.beta)
        return weights, {**drawn, "target_cosines": targets} if training else {}

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
