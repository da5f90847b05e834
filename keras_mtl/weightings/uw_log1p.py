import keras

from keras_mtl.methods import LossWeighting, positive
from keras_mtl.registry import register


@register("uw_log1p")
class PositiveUncertaintyWeighting(LossWeighting):
    """Uncertainty weighting with the positive regulariser `log(1 + c_k²)`.

    `total = Σ_k L_k / (2 c_k²) + log(1 + c_k²)`, with learned `c_k` (trainable
    variables of the model, trained by its optimizer, initially 1). Kendall et
    al.'s regulariser `log c_k` becomes negative, and with it the total, once
    `c_k < 1`; `log(1 + c_k²)` is positive for every `c_k ≠ 0`, so the total
    stays positive. For a fixed loss `L_k > 0` the total is smallest at
    `c_k² = (L_k + sqrt(L_k² + 8 L_k)) / 4`, so the weight `1/(2c_k²)` still
    falls as the loss grows. The same form for regression and classification
    tasks. `c_k` itself is learned, as in the paper (not its log, as in Kendall
    et al.'s). The losses must be non-negative: with a negative loss the total
    would fall without bound as `c_k → 0`.

    Liebel & Körner, "Auxiliary Tasks in Multi-task Learning", arXiv 1805.06334,
    2018; compared with Kendall et al.'s form by Kirchdorfer et al., "Analytical
    Uncertainty-Based Loss Weighting in Multi-Task Learning", 2024. The paper
    text was not available here: the rule and the initial `c_k = 1` are those
    of the widely used implementation that cites it (AutomaticWeightedLoss).

    Args:
        losses: the per-task losses.
        initial_scale: the initial `c_k` > 0, default 1.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.PositiveUncertaintyWeighting({"depth": "mse", "seg": "sparse_categorical_crossentropy"})
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, initial_scale=1.0, name=None):
        super().__init__(losses, name=name)
        self.initial_scale = positive(initial_scale, "initial_scale")

    def build_state(self, state, task_names):
        initializer = keras.initializers.Constant(self.initial_scale)
        state.variable("uncertainty_scales", (len(task_names),), initializer=initializer, trainable=True)

    def weights(self, losses, state, training):
        return 0.5 / keras.ops.square(state["uncertainty_scales"]), {}

    def regularization(self, state):
        return keras.ops.sum(keras.ops.log1p(keras.ops.square(state["uncertainty_scales"])))

    def get_config(self):
        return {**super().get_config(), "initial_scale": self.initial_scale}
