"""GradDrop (Chen et al. 2020, "Just Pick a Sign: Gradient Sign Dropout", NeurIPS)."""

import keras
from keras import ops

from keras_mtl.aggregators._common import kept_share
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import RandomStream, draw_seed
from keras_mtl.registry import register


def graddrop_update(jacobian, uniform, leak=0.0):
    """GradDrop update vector from the per-task gradients.

    Elementwise, so it needs J, not G: with the sign purity
    ``P = (1 + sum_k g_k / sum_k |g_k|) / 2`` and one ``U ~ Uniform(0, 1)``
    per coordinate (shared by the tasks), task k keeps its component where
    ``P > U and g_k > 0`` or ``P < U and g_k < 0`` (mask ``M_k``), so each
    coordinate of the update comes from one sign only. ``leak`` (Chen et al.'s
    leak parameter, as in LibMTL) lets that fraction of every original
    gradient through: ``d = sum_k g_k (leak + (1 - leak) M_k)``; 0 is pure
    GradDrop, 1 the plain sum. The paper applies it to gradients w.r.t. a
    representation (optionally summed over the batch with the input's sign);
    that choice is the caller's.

    Args:
        jacobian: (K, P) per-task gradients.
        uniform: (P,) the U(0, 1) draws (the method draws them from its
            `RandomStream`).
        leak: float in [0, 1], default 0.

    Returns:
        float32 (P,) update.

    Degenerate inputs: a coordinate where all g_k are 0 gives 0; identical
    gradients are kept whole (P is 0 or 1); a non-finite J gives a zero
    update. Plain float32 `keras.ops`, XLA-compatible.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, -1.0, 2.0], [-3.0, 1.0, 2.0]])
        >>> uniform = np.array([0.5, 0.5, 0.5])  # purity P = (0.25, 0.5, 1)
        >>> np.round(np.asarray(graddrop_update(jacobian, uniform)), 4)  # P < U: the negative part; P = U: none; P = 1: all
        array([-3.,  0.,  4.], dtype=float32)
    """
    jacobian = ops.cast(jacobian, "float32")
    ok = ops.all(ops.isfinite(jacobian))
    jacobian = ops.where(ok, jacobian, ops.zeros_like(jacobian))
    purity = 0.5 * (1.0 + ops.divide_no_nan(ops.sum(jacobian, 0), ops.sum(ops.abs(jacobian), 0)))
    uniform = ops.cast(uniform, "float32")
    keep = ((purity > uniform) & (jacobian > 0)) | ((purity < uniform) & (jacobian < 0))
    mask = leak + (1.0 - leak) * ops.cast(keep, "float32")
    return ops.sum(jacobian * mask, 0)


@register("graddrop")
class GradDrop(GradientMethod):
    """GradDrop: keep, coordinate by coordinate, the gradients of one sign.

    With the sign purity `P = ½(1 + Σ_k g_k / Σ_k |g_k|)` and `U ~ Uniform(0, 1)`
    per coordinate, task k keeps its component where (`P > U`, `g_k > 0`) or
    (`P < U`, `g_k < 0`); `leak` lets that fraction of every gradient
    through (see `graddrop_update`). The paper applies it to the shared
    representation: build the model with `representation=`. The logged
    weight of task k is how much of `g_k` survives along itself,
    `⟨d, g_k⟩ / ‖g_k‖²`. Draws come from `seed` by a random stream saved
    with the model (each backend draws its own numbers). In representation
    mode under a distribution strategy each replica draws for its own
    samples, so the masks differ from a one-device run's.

    Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
    Gradient Sign Dropout", NeurIPS 2020.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        leak: the fraction of every task gradient let through unmasked, in [0, 1], default 0.0 (the paper's).
        seed: seed of the masks' random stream (saved with the model), default None (drawn at random).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.GradDrop({"a": "mse", "b": "mse"}, leak=0.0, seed=0)
    """

    def __init__(self, losses=None, leak=0.0, seed=None, name=None):
        super().__init__(losses, name=name)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {leak}.")
        self.leak = float(leak)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        self.stream = RandomStream(state, "rng", self.seed)

    def combine(self, gradients, state, training):
        size = ops.shape(gradients.jacobian)[1:]
        uniform, new_state = self.stream.draw(state, lambda seed: keras.random.uniform(size, seed=seed))
        direction = graddrop_update(gradients.jacobian, uniform, self.leak)
        return direction, kept_share(gradients, direction), new_state if training else {}

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
