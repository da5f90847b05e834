"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning")."""

import tensorflow as tf

from keras_mtl.aggregators._common import finite_or_zero, prepare_gramian, random_orders
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import draw_seed, next_seed
from keras_mtl.registry import register


def _projected_coefficients(gramian, orders):
    """Rows c_i with v_i = c_i^T J, the PCGrad-projected gradient of task i.

    ``orders[i]`` lists the other tasks in the order task i is projected on.
    In Gramian form v_i . g_j = (C G)_ij and ||g_j||^2 = G_jj, so the
    projection ``v <- v - (v.g_j / ||g_j||^2) g_j`` only changes c_i[j]. All
    tasks i advance together, one position of their order per step.
    """
    num = gramian.shape[0]
    sq_norms = tf.linalg.diag_part(gramian)
    coeffs = tf.eye(num, dtype=gramian.dtype)
    for position in range(num - 1):
        j = orders[:, position]
        dots = tf.gather(tf.matmul(coeffs, gramian), j, batch_dims=1)
        # divide_no_nan: a zero g_j has v.g_j = 0 and is never projected on.
        shift = tf.math.divide_no_nan(tf.minimum(dots, 0.0), tf.gather(sq_norms, j))
        coeffs -= shift[:, None] * tf.one_hot(j, num, dtype=gramian.dtype)
    return coeffs


def pcgrad_weights(gramian, seed):
    """PCGrad task weights from the Gramian.

    For each task i, ``v = g_i``, then for each j != i in a fresh random order:
    if ``v.g_j < 0``, ``v <- v - (v.g_j / ||g_j||^2) g_j``. The update is
    ``d = sum_i v_i``; with ``v_i = c_i^T J`` this is ``d = J^T w``,
    ``w = sum_i c_i``.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        seed: int32 (2,) stateless-RNG seed; the orders come from
            ``_common.random_orders(seed, K)`` (same as GradVac).

    Returns:
        float32 (K,) weights (computed in float64). Non-conflicting gradients (all ``G_ij >= 0``)
        give exactly ``w = 1`` (plain sum).

    Degenerate inputs: identical gradients give ``w = 1``; a zero gradient is
    never projected on (and its own v is 0), so all-zero G gives ``w = 1``; opposing collinear gradients
    project each other to 0 (K = 2: ``w = (2, 2)``, ``d = 0``); non-finite G
    gives zero weights. Graph- and XLA-compatible (K - 1 unrolled steps); under
    XLA the same seed gives other orders (see ``_common.stateless_uniform``).
    """
    gramian, ok = prepare_gramian(gramian)
    orders = random_orders(seed, gramian.shape[0])
    return finite_or_zero(tf.reduce_sum(_projected_coefficients(gramian, orders), 0), ok)


@register("pcgrad")
class PCGrad(GradientMethod):
    """PCGrad: project each task gradient off the others it conflicts with.

    For each task i, `v = g_i`; for every other task j in a fresh random
    order, if `v·g_j < 0`, `v ← v − (v·g_j/‖g_j‖²) g_j`; the update is
    `Σ_i v_i` (see `pcgrad_weights`). The orders are drawn from `seed` and a
    step counter saved with the model, so runs repeat.

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.

    Example:

    >>> keras_mtl.PCGrad({"a": "mse", "b": "mse"}, seed=0)
    """

    def __init__(self, losses=None, seed=None, name=None):
        super().__init__(losses, name=name)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        state.variable("draws", (), dtype="int32")

    def task_weights(self, gradients, state, training):
        return pcgrad_weights(gradients.gramian, next_seed(state, self.seed))

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
