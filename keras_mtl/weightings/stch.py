import keras

from keras_mtl.arguments import Integer, PerTask, Real, declare_arguments, per_task
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register

# The authors' guard inside every log (official STCH code and LibMTL): a loss
# of exactly 0 gives a large finite weight rather than a division by zero.
EPSILON = 1e-20


@register("stch")
@declare_arguments(
    mu=Real(minimum=0, minimum_open=True),
    warmup_epochs=Integer(minimum=0),
    preference=PerTask(Real(minimum=0, minimum_open=True), by_name=False),
)
class SmoothTchebycheff(LossWeighting):
    """STCH: smooth Tchebycheff scalarisation of the log-normalised losses.

    The paper's scalarisation is `μ·log Σ_k exp(λ_k (L_k − z_k*) / μ)`, a
    smooth maximum that tends to the Tchebycheff `max_k λ_k (L_k − z_k*)` as
    `μ → 0`. The authors' multi-task code, which this class follows, applies it
    to log losses normalised by a nadir point `z`, after a warm-up:

    - epochs `0 … warmup_epochs` (the first `warmup_epochs + 1`): the total is
      `Σ_k log(L_k + ε)`, so `w_k = 1 / (L_k + ε)`; the last of them, epoch
      `warmup_epochs`, sets `z` to the mean of its training batch losses;
    - afterwards: `ℓ_k = log(L_k / z_k + ε)` and the total is
      `K·μ·log Σ_k exp(λ_k ℓ_k / μ)`, whose gradient is that of the weights
      `w_k = K·λ_k·softmax(λ ℓ / μ)_k / (L_k + ε z_k)` on the losses.

    ε = 1e-20 as in the authors' code. Here, as everywhere in keras_mtl, the
    weights are applied to the losses with the gradient stopped, so the logged
    `loss` is `Σ_k w_k L_k`, not the scalarisation's value; the gradients are
    the same. A nadir entry below ε (a task whose loss was 0 throughout epoch
    `warmup_epochs`) is raised to ε so that `ℓ` stays finite. Only completed
    epochs with training steps count, and each `fit` epoch starts from empty
    sums (an interrupted epoch leaves nothing behind); with `train_on_batch`,
    end each epoch with `model.end_epoch()`. The epoch counter, the running
    sums and `z` are saved with the model.

    The preference `λ` is the paper's; the authors' multi-task code fixes it
    to 1 (and multiplies by K), which is the default here. TorchJD's `STCH` is
    the plain paper formula (λ = 1/K, no nadir, no warm-up), which this class
    does not offer: after the warm-up it always normalises by the nadir.

    Lin, Zhang, Yang, Liu, Wang & Zhang, "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization", ICML 2024 (arXiv 2402.19078); official code
    Xi-L/STCH (STCH_MTL), identical to LibMTL's `STCH`: μ = 1, 4 warm-up
    epochs. The paper's μ grid is {0.01, 0.1, 0.5, 1}.

    Args:
        losses: the per-task losses.
        mu: the smoothing μ > 0; small μ approaches the maximum of the
            preference-weighted log losses, large μ their sum.
        warmup_epochs: epochs of plain log losses before the nadir epoch (≥ 0).
        preference: λ, one positive number per task (a list in the model's
            output order); None means all 1, as in the authors' code.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.SmoothTchebycheff({"a": "mse", "b": "mse"}, mu=0.5, warmup_epochs=2)
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, mu=1.0, warmup_epochs=4, preference=None, name=None):
        super().__init__(losses, name=name)
        self.mu = mu
        self.warmup_epochs = warmup_epochs
        self.preference = preference

    def build_state(self, state, task_names):
        k = len(task_names)
        if self.preference is not None:
            per_task(self.preference, task_names, "preference", type(self).__name__)
        state.variable("epochs_seen", ())
        state.variable("epoch_loss_sum", (k,))
        state.variable("epoch_batches", ())
        state.variable("nadir", (k,))

    def weights(self, losses, state, training):
        warmup_weights = 1.0 / (losses + EPSILON)
        weights = keras.ops.where(
            state["epochs_seen"] > self.warmup_epochs, self._stch_weights(losses, state["nadir"]), warmup_weights
        )
        if not training:
            return weights, {}
        return weights, {
            "epoch_loss_sum": state["epoch_loss_sum"] + losses,
            "epoch_batches": state["epoch_batches"] + 1.0,
        }

    def _stch_weights(self, losses, nadir):
        preference = 1.0 if self.preference is None else keras.ops.convert_to_tensor(self.preference, losses.dtype)
        log_losses = keras.ops.log(losses / keras.ops.maximum(nadir, EPSILON) + EPSILON)
        # d/dL_k of K·μ·logsumexp(λ ℓ / μ), with dℓ_k/dL_k = 1 / (L_k + ε z_k).
        return (
            losses.shape[0]
            * preference
            * keras.ops.softmax(preference * log_losses / self.mu)
            / (losses + EPSILON * nadir)
        )

    def begin_epoch(self, state):
        return {
            "epoch_loss_sum": keras.ops.zeros_like(state["epoch_loss_sum"]),
            "epoch_batches": keras.ops.zeros_like(state["epoch_batches"]),
        }

    def end_epoch(self, state):
        had_steps = state["epoch_batches"] > 0
        was_nadir_epoch = keras.ops.logical_and(
            had_steps, keras.ops.equal(state["epochs_seen"], float(self.warmup_epochs))
        )
        mean = keras.ops.divide_no_nan(state["epoch_loss_sum"], state["epoch_batches"])
        return {
            "nadir": keras.ops.where(was_nadir_epoch, keras.ops.maximum(mean, EPSILON), state["nadir"]),
            "epochs_seen": state["epochs_seen"] + keras.ops.cast(had_steps, state["epochs_seen"].dtype),
            **self.begin_epoch(state),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "mu": self.mu,
            "warmup_epochs": self.warmup_epochs,
            "preference": self.preference,
        }
