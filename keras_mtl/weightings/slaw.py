import keras

from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("slaw")
class SLAW(LossWeighting):
    """SLAW: weights inversely proportional to each loss's running spread.

    Running mean `a_k` and variance `v_k` of every task loss (a plain average
    over the first `warmup_steps` steps, then an EMA with `beta`; the current
    loss is included before the weights are computed), `s_k = sqrt(v_k)`,
    `w_k ∝ 1 / max(s_k, 1e-5)` rescaled to sum to K. On the first step every
    `s_k` is 0, so `w = 1`. The moments are saved with the model.

    The variance is tracked directly, with the weighted Welford update (Finch
    2009, "Incremental calculation of weighted mean and variance"): at rate
    `r` (`1/n` in the warm-up, then `1 − beta`), `δ = L − a`, `a += r·δ`,
    `v = (1 − r)(v + r·δ²)`. It equals the paper's `b − a²` (`b` the running
    mean of `L²`) in exact arithmetic, but does not cancel in float32 when a
    loss barely varies (`b − a²` is off by 2× at a relative spread of 3e-4).
    Its accuracy is then set by the float32 resolution of the losses
    themselves (about 1e-7 of the loss). A loss whose square overflows
    float32 (about 1e19) makes the variance infinite: training stops with an
    error that names SLAW's state.

    Crawshaw & Košecká, "SLAW: Scaled Loss Approximate Weighting for Efficient
    Multi-Task Learning", 2021.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        beta: the EMA rate of the moments after the warm-up, in [0, 1), default 0.99 (the paper's).
        warmup_steps: steps of plain averaging before the EMA, default 100.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.SLAW({"a": "mse", "b": "mse"})
    """

    def __init__(self, losses=None, beta=0.99, warmup_steps=100, name=None):
        super().__init__(losses, name=name)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}.")
        self.beta = float(beta)
        self.warmup_steps = int(warmup_steps)

    def build_state(self, state, task_names):
        k = len(task_names)
        state.variable("loss_mean", (k,))
        state.variable("loss_variance", (k,))
        state.variable("steps", ())

    def weights(self, losses, state, training):
        new_state = self._moments_with(losses, state) if training else {}
        spread = keras.ops.sqrt(new_state.get("loss_variance", state["loss_variance"]))
        inverse = 1.0 / keras.ops.maximum(spread, 1e-5)
        return losses.shape[0] * inverse / keras.ops.sum(inverse), new_state

    def _moments_with(self, losses, state):
        """The step counter and the running mean and variance once `losses` is included (Welford's update)."""
        steps = state["steps"] + 1.0
        # 1/n while averaging plainly, then the EMA's constant rate.
        rate = keras.ops.where(steps <= self.warmup_steps, 1.0 / steps, 1.0 - self.beta)
        deviation = losses - state["loss_mean"]
        return {
            "steps": steps,
            "loss_mean": state["loss_mean"] + rate * deviation,
            "loss_variance": (1.0 - rate) * (state["loss_variance"] + rate * keras.ops.square(deviation)),
        }

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "warmup_steps": self.warmup_steps}
