import keras
import numpy as np

from keras_mtl.arguments import Choice, Integer, Real, declare_arguments
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register

VARIANTS = ("original", "normalized", "loss_weighted")
RECORDS = ("epoch", "step")
# The reference code's guard in the softmax's denominator.
EPSILON = 1e-8


def forward_difference(points):
    """The `points`-point forward-difference stencil of a first derivative (unit spacing), float64.

    The coefficients `c` with `Σ_j c_j f(j) = f'(0)` exactly for polynomials of
    degree < `points`: (−1, 1) for 2 points, (−25/12, 4, −3, 4/3, −1/4) for 5.
    """
    offsets = np.arange(points, dtype=np.float64)
    moments = np.vander(offsets, increasing=True).T  # row m: the offsets to the power m
    return np.linalg.solve(moments, np.eye(points)[1])


@register("softadapt")
@declare_arguments(beta=Real(), window=Integer(minimum=2), variant=Choice(VARIANTS), record=Choice(RECORDS))
class SoftAdapt(LossWeighting):
    """SoftAdapt: a softmax over the rates of change of the task losses.

    The last `n` recorded values of each task's loss give its slope `s_k`, a
    forward finite difference over the window (the derivative at its oldest
    point, of order `n − 1`, as the reference code's default); then
    `α_k = f_k·exp(β (s_k − max s)) / (Σ_l f_l·exp(β (s_l − max s)) + 1e-8)`,
    with, by `variant`:

    - `"original"` (paper §3.1.1): `f = 1`;
    - `"normalized"` (§3.1.3): `f = 1` and `s_k` replaced by `s_k / Σ_l s_l`
      (a plain sum, as in the reference; 0 when the slopes sum to 0);
    - `"loss_weighted"` (the reference code's `LossWeightedSoftAdapt`): `f_k`
      the mean of the task's `n` values.

    The weights sum to 1 (up to the 1e-8); β > 0 favours the tasks whose loss
    falls slowest or rises, β < 0 the fastest-falling ones; β = 0 gives 1/K
    (weights proportional to the mean losses in the loss-weighted variant).
    Until `n` values are recorded the weights are 1/K, so their sum does not
    jump when SoftAdapt starts (the README's example starts from 1 each).

    Which loss values form the window the paper leaves to the user
    ("iterations or epochs"): `record="epoch"` records each epoch's mean
    training loss (the weights change at the end of every epoch once `n`
    epochs are recorded), `record="step"` every training batch's loss (the
    weights of a step use its own loss). In epoch mode only completed epochs
    with training steps count, each `fit` epoch starts from empty sums, and
    with `train_on_batch` each epoch must end with `model.end_epoch()`. The
    window is saved with the model.

    Heydari, Thompson & Mehmood, "SoftAdapt: Techniques for Adaptive Loss
    Weighting of Neural Networks with Multi-Part Loss Functions", arXiv
    1912.12355, 2019; official code dr-aheydari/SoftAdapt. β = 0.1 and n = 5
    as in its README, which recommends the loss-weighted variant (the default
    here). The reference code refuses odd orders above 5; the stencil here
    exists for every window of 2 or more points.

    Args:
        losses: the per-task losses.
        beta: β, any real number.
        window: n ≥ 2, the number of recorded loss values per slope.
        variant: `"loss_weighted"`, `"original"` or `"normalized"`.
        record: `"epoch"` or `"step"`.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.SoftAdapt({"a": "mse", "b": "mse"}, beta=0.1, window=5)
    """

    def __init__(self, losses=None, beta=0.1, window=5, variant="loss_weighted", record="epoch", name=None):
        super().__init__(losses, name=name)
        self.beta = beta
        self.window = window
        self.variant = variant
        self.record = record
        self._stencil = forward_difference(self.window).astype(np.float32)

    @property
    def needs_non_negative_losses(self):
        # The loss-weighted variant multiplies by mean losses: a negative one would flip a weight's sign.
        return self.variant == "loss_weighted"

    def build_state(self, state, task_names):
        k = len(task_names)
        state.variable("loss_history", (k, self.window))  # oldest value first
        state.variable("recorded", ())
        if self.record == "epoch":
            state.variable("epoch_loss_sum", (k,))
            state.variable("epoch_batches", ())

    def weights(self, losses, state, training):
        if training and self.record == "step":
            new_state = self._pushed(state, losses)
        elif training:
            new_state = {
                "epoch_loss_sum": state["epoch_loss_sum"] + losses,
                "epoch_batches": state["epoch_batches"] + 1.0,
            }
        else:
            new_state = {}
        # In step mode the window already holds this step's loss.
        current = {**state, **new_state}
        uniform = keras.ops.full_like(losses, 1.0 / losses.shape[0])
        return keras.ops.where(
            current["recorded"] >= self.window, self._weights(current["loss_history"]), uniform
        ), new_state

    def _weights(self, history):
        slopes = keras.ops.matmul(history, keras.ops.convert_to_tensor(self._stencil, history.dtype))
        if self.variant == "normalized":
            slopes = keras.ops.divide_no_nan(slopes, keras.ops.sum(slopes))
        scores = keras.ops.exp(self.beta * (slopes - keras.ops.max(slopes)))
        if self.variant == "loss_weighted":
            scores *= keras.ops.mean(history, axis=1)
        return scores / (keras.ops.sum(scores) + EPSILON)

    def _pushed(self, state, values, recorded=True):
        """The window with `values` appended and its oldest dropped, and the count; unchanged unless `recorded`."""
        history = state["loss_history"]
        pushed = keras.ops.concatenate([history[:, 1:], values[:, None]], axis=1)
        return {
            "loss_history": keras.ops.where(recorded, pushed, history),
            "recorded": state["recorded"] + keras.ops.cast(recorded, state["recorded"].dtype),
        }

    @property
    def works_per_epoch(self):
        return self.record == "epoch"

    def begin_epoch(self, state):
        if self.record == "step":
            return {}
        return {
            "epoch_loss_sum": keras.ops.zeros_like(state["epoch_loss_sum"]),
            "epoch_batches": keras.ops.zeros_like(state["epoch_batches"]),
        }

    def end_epoch(self, state):
        if self.record == "step":
            return {}
        # An epoch without training steps records nothing.
        mean = keras.ops.divide_no_nan(state["epoch_loss_sum"], state["epoch_batches"])
        return {**self._pushed(state, mean, state["epoch_batches"] > 0), **self.begin_epoch(state)}

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "window": self.window,
            "variant": self.variant,
            "record": self.record,
        }
