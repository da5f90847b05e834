"""Uncertainty weighting (Kendall et al.) and its analytic variants UW-O and UW-SO."""

import keras
import tensorflow as tf

from keras_mtl.methods import LossWeighting, positive
from keras_mtl.registry import register

# Guards the division by a loss that reaches 0 (Kirchdorfer et al. 2024).
EPSILON = 1e-8


@register("uw")
class UncertaintyWeighting(LossWeighting):
    """Uncertainty weighting with learned log-variances `s_k = log σ_k²`.

    Regression form: `total = Σ_k ½·exp(−s_k)·L_k + ½·s_k`;
    classification form: `total = Σ_k exp(−s_k)·L_k + ½·s_k`.
    The `s_k` are trainable variables of the model, trained by its optimizer.

    Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018.

    Args:
        losses: the per-task losses.
        form: `"regression"` or `"classification"`, for every task.
        initial_log_variance: the initial `s_k`; −0.5 as in the UW-SO authors' code.

    Example:

    >>> keras_mtl.UncertaintyWeighting({"depth": "mse", "seg": "sparse_categorical_crossentropy"})
    """

    def __init__(self, losses=None, form="regression", initial_log_variance=-0.5, name=None):
        super().__init__(losses, name=name)
        if form not in ("regression", "classification"):
            raise ValueError(f"form must be 'regression' or 'classification', not {form!r}.")
        self.form = form
        self.initial_log_variance = float(initial_log_variance)

    def build_state(self, state, task_names):
        state.variable("log_variances", (len(task_names),), initializer=keras.initializers.Constant(self.initial_log_variance), trainable=True)

    def task_weights(self, losses, state, training):
        factor = 0.5 if self.form == "regression" else 1.0
        return factor * tf.exp(-state["log_variances"])

    def regularization(self, state):
        return 0.5 * tf.reduce_sum(state["log_variances"])

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

    Example:

    >>> keras_mtl.AnalyticUncertaintyWeighting({"a": "mse", "b": "mae"})
    """

    needs_non_negative_losses = True

    def task_weights(self, losses, state, training):
        return 1.0 / (losses + EPSILON)


@register("uw_so")
class SoftmaxUncertaintyWeighting(LossWeighting):
    """UW-SO: `w = softmax((1 / (sg[L] + ε)) / T)` over the tasks, every batch.

    The weights sum to 1; a large temperature `T` makes them uniform, a small
    one gives all the weight to the task with the smallest loss. ε = 1e-8; the
    losses must be non-negative. (Not `softmax(−L/T)`, a common wrong copy.)

    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", 2024; their grid for T is {1, 3, 5, 7, 10, 15, 20}.

    Args:
        losses: the per-task losses.
        temperature: T > 0, default 1.

    Example:

    >>> keras_mtl.SoftmaxUncertaintyWeighting({"left": "mse", "right": "mse"}, temperature=5.0)
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, temperature=1.0, name=None):
        super().__init__(losses, name=name)
        self.temperature = positive(temperature, "temperature")

    def task_weights(self, losses, state, training):
        return tf.nn.softmax((1.0 / (losses + EPSILON)) / self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
