import keras

from keras_mtl.arguments import Real, declare_arguments
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("dwa")
@declare_arguments(temperature=Real(minimum=0, minimum_open=True))
class DynamicWeightAverage(LossWeighting):
    r"""DWA: weights from how fast each task's loss fell over the last epochs.

    $$
    w_k = K\,\operatorname{softmax}\!\left(\frac{r}{T}\right)_k, \qquad r_k = \frac{\bar L_k(e-1)}{\bar L_k(e-2)}
    $$

    `w_k = K·softmax(r / T)_k` with `r_k = L̄_k(e−1) / L̄_k(e−2)`, the ratio of
    the task's mean training loss in the two previous epochs; `w = 1` in the
    first two epochs. The epoch means, kept in the model's state, are saved
    with the model and survive `BackupAndRestore`. A zero mean loss gives a
    ratio of 0 rather than a division by zero.

    Only completed epochs count: each `fit` epoch starts from empty sums (an
    interrupted epoch leaves nothing behind), and an epoch without training
    steps changes nothing. With `train_on_batch`, end each epoch with
    `model.end_epoch()` (the model warns once if you train this way).

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019; T = 2.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        temperature: T > 0 of the softmax, default 2.0 (the paper's).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.DynamicWeightAverage({"a": "mse", "b": "mse"}, temperature=2.0)
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, temperature=2.0, name=None):
        super().__init__(losses, name=name)
        self.temperature = temperature

    def build_state(self, state, task_names):
        k = len(task_names)
        state.variable("epoch_loss_sum", (k,))
        state.variable("epoch_batches", ())
        state.variable("last_epoch_mean", (k,))
        state.variable("second_last_epoch_mean", (k,))
        state.variable("epochs_seen", ())

    def weights(self, losses, state, training):
        ratio = keras.ops.divide_no_nan(state["last_epoch_mean"], state["second_last_epoch_mean"])
        weights = losses.shape[0] * keras.ops.softmax(ratio / self.temperature)
        weights = keras.ops.where(state["epochs_seen"] >= 2, weights, keras.ops.ones_like(weights))
        if not training:
            return weights, {}
        return weights, {
            "epoch_loss_sum": state["epoch_loss_sum"] + losses,
            "epoch_batches": state["epoch_batches"] + 1.0,
        }

    def begin_epoch(self, state):
        return {
            "epoch_loss_sum": keras.ops.zeros_like(state["epoch_loss_sum"]),
            "epoch_batches": keras.ops.zeros_like(state["epoch_batches"]),
        }

    def end_epoch(self, state):
        had_steps = state["epoch_batches"] > 0
        mean = keras.ops.divide_no_nan(state["epoch_loss_sum"], state["epoch_batches"])
        return {
            "second_last_epoch_mean": keras.ops.where(
                had_steps, state["last_epoch_mean"], state["second_last_epoch_mean"]
            ),
            "last_epoch_mean": keras.ops.where(had_steps, mean, state["last_epoch_mean"]),
            "epochs_seen": state["epochs_seen"] + keras.ops.cast(had_steps, state["epochs_seen"].dtype),
            **self.begin_epoch(state),
        }

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
