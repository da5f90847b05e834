import keras

from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@register("mean")
class MeanGradient(GradientMethod):
    r"""The mean of the task gradients, `d = (1/K) Σ_k g_k`.

    $$
    d = \frac{1}{K} \sum_{k=1}^{K} g_k
    $$

    Equal weighting (divided by K) computed through the per-task gradients:
    the reference that isolates what a gradient method's aggregation costs,
    and the plain aggregator of per-task SAM.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.get("mean", {"a": "mse", "b": "mse"})
    """

    def gradient_weights(self, gradients, state, training):
        return keras.ops.full_like(gradients.losses, 1.0 / gradients.losses.shape[0]), {}
