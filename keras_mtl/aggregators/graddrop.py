"""GradDrop (Chen et al. 2020, "Just Pick a Sign: Gradient Sign Dropout", NeurIPS)."""

import tensorflow as tf

from keras_mtl.aggregators._common import stateless_uniform
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import draw_seed, next_seed
from keras_mtl.registry import register


def graddrop_update(jacobian, seed, leak=0.0):
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
        seed: int32 (2,) stateless-RNG seed for U (``_common.stateless_uniform``).
        leak: float in [0, 1], default 0.

    Returns:
        float32 (P,) update.

    Degenerate inputs: a coordinate where all g_k are 0 gives 0; identical
    gradients are kept whole (P is 0 or 1); a non-finite J gives a zero
    update. Graph- and XLA-compatible; under XLA the same seed draws another U.
    """
    jacobian = tf.cast(jacobian, tf.float32)
    ok = tf.reduce_all(tf.math.is_finite(jacobian))
    jacobian = tf.where(ok, jacobian, tf.zeros_like(jacobian))
    purity = 0.5 * (
        1.0
        + tf.math.divide_no_nan(tf.reduce_sum(jacobian, 0), tf.reduce_sum(tf.abs(jacobian), 0))
    )
    uniform = stateless_uniform(tf.shape(purity), seed)
    keep = ((purity > uniform) & (jacobian > 0)) | ((purity < uniform) & (jacobian < 0))
    mask = leak + (1.0 - leak) * tf.cast(keep, tf.float32)
    return tf.reduce_sum(jacobian * mask, 0)


@register("graddrop")
class GradDrop(GradientMethod):
    """GradDrop: keep, coordinate by coordinate, the gradients of one sign.

    With the sign purity `P = ½(1 + Σ_k g_k / Σ_k |g_k|)` and `U ~ Uniform(0, 1)`
    per coordinate, task k keeps its component where (`P > U`, `g_k > 0`) or
    (`P < U`, `g_k < 0`); `leak` lets that fraction of every gradient
    through (see `graddrop_update`). The paper applies it to the shared
    representation: build the model with `representation=`. The logged
    weight of task k is how much of `g_k` survives along itself,
    `⟨d, g_k⟩ / ‖g_k‖²`. Draws come from `seed` and a saved step counter.
    In representation mode under tf.distribute each replica draws for its
    own samples, so the masks differ from a one-device run's.

    Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
    Gradient Sign Dropout", NeurIPS 2020.

    Example:

    >>> keras_mtl.GradDrop({"a": "mse", "b": "mse"}, leak=0.0, seed=0)
    """

    def __init__(self, losses=None, leak=0.0, seed=None, name=None):
        super().__init__(losses, name=name)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {leak}.")
        self.leak = float(leak)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        state.variable("draws", (), dtype="int32")

    def combine(self, gradients, state, training):
        direction = graddrop_update(gradients.jacobian, next_seed(state, self.seed), self.leak)
        along = tf.linalg.matvec(gradients.jacobian, direction)
        return direction, tf.math.divide_no_nan(along, tf.linalg.diag_part(gradients.gramian))

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
