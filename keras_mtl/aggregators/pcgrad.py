"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning")."""

import keras
from keras import ops

from keras_mtl.aggregators._common import (
    diagonal,
    finite_or_zero,
    float64_function,
    prepare_gramian,
    random_orders,
    take_rows,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import RandomStream, draw_seed
from keras_mtl.registry import register


def _projected_coefficients(gramian, orders):
    """Rows c_i with v_i = c_i^T J, the PCGrad-projected gradient of task i.

    ``orders[i]`` lists the other tasks in the order task i is projected on.
    In Gramian form v_i . g_j = (C G)_ij and ||g_j||^2 = G_jj, so the
    projection ``v <- v - (v.g_j / ||g_j||^2) g_j`` only changes c_i[j]. All
    tasks i advance together, one position of their order per step.
    """
    num = gramian.shape[0]
    sq_norms = diagonal(gramian)
    coeffs = ops.eye(num, dtype=gramian.dtype)
    for position in range(num - 1):
        j = orders[:, position]
        dots = take_rows(ops.matmul(coeffs, gramian), j)
        # divide_no_nan: a zero g_j has v.g_j = 0 and is never projected on.
        shift = ops.divide_no_nan(ops.minimum(dots, 0.0), ops.take(sq_norms, j))
        coeffs = coeffs - shift[:, None] * ops.one_hot(j, num, dtype=gramian.dtype)
    return coeffs


def draw_order_keys(stream, state, num_tasks):
    """``(keys, new state)``: fresh U(0, 1) keys (K, K) for ``random_orders``, from the method's `RandomStream`."""
    return stream.draw(state, lambda seed: keras.random.uniform((num_tasks, num_tasks), seed=seed))


@float64_function
def pcgrad_weights(gramian, keys):
    """PCGrad task weights from the Gramian.

    For each task i, ``v = g_i``, then for each j != i in a random order:
    if ``v.g_j < 0``, ``v <- v - (v.g_j / ||g_j||^2) g_j``. The update is
    ``d = sum_i v_i``; with ``v_i = c_i^T J`` this is ``d = J^T w``,
    ``w = sum_i c_i``.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        keys: (K, K) U(0, 1) draws; task i visits the others by increasing
            ``keys[i, j]`` (``_common.random_orders``, same as GradVac).

    Returns:
        float32 (K,) weights (computed in float64). Non-conflicting gradients (all ``G_ij >= 0``)
        give exactly ``w = 1`` (plain sum).

    Degenerate inputs: identical gradients give ``w = 1``; a zero gradient is
    never projected on (and its own v is 0), so all-zero G gives ``w = 1``; opposing collinear gradients
    project each other to 0 (K = 2: ``w = (2, 2)``, ``d = 0``); non-finite G
    gives zero weights. Deterministic given the keys (K - 1 unrolled steps).

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> keys = np.array([[0.0, 0.5], [0.5, 0.0]])  # with two tasks, one order
        >>> np.round(np.asarray(pcgrad_weights(gramian, keys)), 4)  # v_1 = g_1 + g_2/2, v_2 = g_2 + g_1
        array([2. , 1.5], dtype=float32)
    """
    gramian, ok = prepare_gramian(gramian)
    orders = random_orders(keys)
    return finite_or_zero(ops.sum(_projected_coefficients(gramian, orders), 0), ok)


@register("pcgrad")
class PCGrad(GradientMethod):
    r"""PCGrad: project each task gradient off the others it conflicts with.

    $$
    v_i \leftarrow v_i - \frac{\min(v_i^\top g_j, 0)}{\lVert g_j \rVert^2} g_j \ \text{for each } j \ne i, \qquad d = \sum_i v_i
    $$

    For each task i, `v = g_i`; for every other task j in a fresh random
    order, if `v·g_j < 0`, `v ← v − (v·g_j/‖g_j‖²) g_j`; the update is
    `Σ_i v_i` (see `pcgrad_weights`). The orders are drawn from `seed` by a
    random stream saved with the model, so runs repeat (on one backend: each
    backend draws its own numbers).

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        seed: seed of the random task orders (saved with the model), default None (drawn at random).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.PCGrad({"a": "mse", "b": "mse"}, seed=0)
    """

    def __init__(self, losses=None, seed=None, name=None):
        super().__init__(losses, name=name)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        self.stream = RandomStream(state, "rng", self.seed)

    def gradient_weights(self, gradients, state, training):
        keys, new_state = draw_order_keys(self.stream, state, gradients.gramian.shape[0])
        return pcgrad_weights(gradients.gramian, keys), new_state if training else {}

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
