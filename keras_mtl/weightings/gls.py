import keras

from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register
from keras_mtl.weightings.uncertainty import EPSILON


@register("gls")
class GeometricLossStrategy(LossWeighting):
    """GLS: the geometric mean of the task losses, `(Π_k L_k)^{1/K}`.

    Its gradient is `Σ_k GM/(K·L_k)·∇L_k`, so it is written as the weights
    `w_k = sg[GM / (K·(L_k + ε))]` on the losses: the same gradient, the UW-O
    direction scaled by GM/K, and exact across replicas. The logged total,
    `Σ_k w_k L_k`, equals the geometric mean (up to ε = 1e-8). The losses
    must be non-negative.

    Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and
    Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.GeometricLossStrategy({"a": "mse", "b": "mse"})
    """

    needs_non_negative_losses = True

    def weights(self, losses, state, training):
        losses = losses + EPSILON
        geometric_mean = keras.ops.exp(keras.ops.mean(keras.ops.log(losses)))
        return geometric_mean / (losses.shape[0] * losses), {}
