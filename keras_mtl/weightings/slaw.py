import tensorflow as tf

from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("slaw")
class SLAW(LossWeighting):
    """SLAW: weights inversely proportional to each loss's running spread.

    Running mean `a_k` and mean of squares `b_k` of every task loss (a plain
    average over the first `warmup_steps` steps, then an EMA with `beta`; the
    current loss is included before the weights are computed);
    `s_k = sqrt(b_k − a_k²)`, `w_k ∝ 1 / max(s_k, 1e-5)` rescaled to sum to K.
    On the first step every `s_k` is 0, so `w = 1`. The moments are saved
    with the model.

    Crawshaw & Košecká, "SLAW: Scaled Loss Approximate Weighting for Efficient
    Multi-Task Learning", 2021.

    Example:

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
        state.variable("loss_square_mean", (k,))
        state.variable("steps", ())

    def task_weights(self, losses, state, training):
        if training:
            # After the losses (and so their finiteness check) in graph mode: a
            # refused step must not advance the counter.
            with tf.control_dependencies([losses]):
                steps = state["steps"].assign_add(1.0)
            # 1/n while averaging plainly, then the EMA's constant rate.
            rate = tf.where(steps <= self.warmup_steps, 1.0 / steps, 1.0 - self.beta)
            state["loss_mean"].assign_add(rate * (losses - state["loss_mean"]))
            state["loss_square_mean"].assign_add(rate * (tf.square(losses) - state["loss_square_mean"]))
        spread = tf.sqrt(tf.maximum(state["loss_square_mean"] - tf.square(state["loss_mean"]), 0.0))
        inverse = 1.0 / tf.maximum(spread, 1e-5)
        return losses.shape[0] * inverse / tf.reduce_sum(inverse)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "warmup_steps": self.warmup_steps}
