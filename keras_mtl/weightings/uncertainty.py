"""Uncertainty weighting (Kendall et al.) and its analytic variants UW-O and UW-SO."""

import keras

from keras_mtl.arguments import Choice, Real, declare_arguments
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register

# Guards the division by a loss that reaches 0 (Kirchdorfer et al. 2024).
EPSILON = 1e-8
# exp(−s) overflows float32 beyond |s| ≈ 88; well before that a weight times a
# loss does: |s| ≤ 30 keeps a task weight between 5e-14 and 5e12.
MAX_INITIAL_LOG_VARIANCE = 30.0


@register("uw")
@declare_arguments(
    form=Choice(("regression", "classification")),
    initial_log_variance=Real(minimum=-MAX_INITIAL_LOG_VARIANCE, maximum=MAX_INITIAL_LOG_VARIANCE),
)
class UncertaintyWeighting(LossWeighting):
    r"""Uncertainty weighting with learned log-variances `s_k = log σ_k²`.

    $$
    \mathcal{L} = \sum_k \tfrac{1}{2} e^{-s_k} L_k + \tfrac{1}{2} s_k \ \text{(regression)}, \qquad \mathcal{L} = \sum_k e^{-s_k} L_k + \tfrac{1}{2} s_k \ \text{(classification)}
    $$

    Regression form: `total = Σ_k ½·exp(−s_k)·L_k + ½·s_k`;
    classification form: `total = Σ_k exp(−s_k)·L_k + ½·s_k`.
    The `s_k` are trainable variables of the model, trained by its optimizer.

    Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018.

    Args:
        losses: the per-task losses.
        form: `"regression"` or `"classification"`, for every task.
        initial_log_variance: the initial `s_k`, in [−30, 30] (task weights
            between 5e-14 and 5e12); −0.5 as in the UW-SO authors' code.
        name: the method's name, default None (its registered id).

    The losses must be non-negative: with a negative loss the total falls
    without bound as `s_k → −∞`.

    Examples:
        >>> keras_mtl.UncertaintyWeighting({"depth": "mse", "seg": "sparse_categorical_crossentropy"})
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, form="regression", initial_log_variance=-0.5, name=None):
        super().__init__(losses, name=name)
        self.form = form
        self.initial_log_variance = initial_log_variance

    def build_state(self, state, task_names):
        state.variable(
            "log_variances",
            (len(task_names),),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
        )

    def weights(self, losses, state, training):
        factor = 0.5 if self.form == "regression" else 1.0
        return factor * keras.ops.exp(-state["log_variances"]), {}

    def regularization(self, state):
        return 0.5 * keras.ops.sum(state["log_variances"])

    def get_config(self):
        return {**super().get_config(), "form": self.form, "initial_log_variance": self.initial_log_variance}


@register("uw_o")
class AnalyticUncertaintyWeighting(LossWeighting):
    """UW-O: uncertainty weighting at its analytic optimum, `w_k = 1 / (sg[L_k] + ε)`.

    The optimal `σ_k` of uncertainty weighting is the loss itself, so every
    weighted loss `w_k·L_k` is 1 and every task's gradient is divided by its
    loss. ε = 1e-8; the losses must be non-negative.

    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", 2024.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.AnalyticUncertaintyWeighting({"a": "mse", "b": "mae"})
    """

    needs_non_negative_losses = True

    def weights(self, losses, state, training):
        return 1.0 / (losses + EPSILON), {}


@register("uw_so")
@declare_arguments(temperature=Real(minimum=0, minimum_open=True), epsilon=Real(minimum=0, minimum_open=True))
class SoftmaxUncertaintyWeighting(LossWeighting):
    r"""UW-SO: `w = softmax((1 / (sg[L] + ε)) / T)` over the tasks, every batch.

    $$
    w = \operatorname{softmax}\!\left( \frac{1}{T \, (\operatorname{sg}[L] + \varepsilon)} \right)
    $$

    The weights sum to 1; a large temperature `T` makes them uniform, a small
    one gives all the weight to the task with the smallest loss. The losses
    must be non-negative. (Not `softmax(−L/T)`, a common wrong copy.)

    Once a task's loss reaches exactly 0 its logit is `1/(εT)`: with the
    paper's ε = 1e-8 every other task's weight underflows to exactly 0 and
    those tasks stop learning, as the published formula does. A larger
    `epsilon` caps the logits at `1/(εT)` and avoids it (e.g. ε = 0.1 keeps
    the weight of a task with loss 1 at `e^{-(10 − 1/1.1)/T}` of the
    converged task's).

    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", 2024; their grid for T is {1, 3, 5, 7, 10, 15, 20}.

    Args:
        losses: the per-task losses.
        temperature: T > 0, default 1.
        epsilon: ε > 0 added to every loss, default 1e-8 (the paper's).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.SoftmaxUncertaintyWeighting({"left": "mse", "right": "mse"}, temperature=5.0)
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, temperature=1.0, epsilon=EPSILON, name=None):
        super().__init__(losses, name=name)
        self.temperature = temperature
        self.epsilon = epsilon

    def weights(self, losses, state, training):
        return keras.ops.softmax((1.0 / (losses + self.epsilon)) / self.temperature), {}

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "epsilon": self.epsilon}
