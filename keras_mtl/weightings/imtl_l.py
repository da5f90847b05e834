import keras

from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("imtl_l")
class IMTLL(LossWeighting):
    """IMTL-L: learned loss scales, `total = Σ_k exp(s_k)·L_k − s_k`.

    The `s_k` (initially 0) are trainable variables of the model; at the
    optimum every scaled loss `exp(s_k)·L_k` equals 1. The losses must be
    non-negative: with a negative loss the total falls without bound as
    `s_k → ∞`.

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.IMTLL({"a": "mse", "b": "mse"})
    """

    needs_non_negative_losses = True

    def build_state(self, state, task_names):
        state.variable("loss_scales", (len(task_names),), trainable=True)

    def weights(self, losses, state, training):
        return keras.ops.exp(state["loss_scales"]), {}

    def regularization(self, state):
        return -keras.ops.sum(state["loss_scales"])
