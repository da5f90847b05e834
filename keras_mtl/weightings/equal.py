import keras

from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("ew")
class EqualWeighting(LossWeighting):
    r"""Equal weighting: the plain sum of the task losses, `Σ_k L_k`.

    $$
    \mathcal{L} = \sum_{k=1}^{K} L_k
    $$

    The baseline every method is compared with, and what stock Keras does with
    a dict of losses; here it also logs each task's loss.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> model.compile("adam", loss=keras_mtl.EqualWeighting({"a": "mse", "b": "mae"}))
    """

    min_tasks = 1

    def weights(self, losses, state, training):
        return keras.ops.ones_like(losses), {}
