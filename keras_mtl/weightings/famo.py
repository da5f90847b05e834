import keras

from keras_mtl.arguments import PerTask, Real, declare_arguments, per_task
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("famo")
@declare_arguments(
    min_losses=PerTask(Real(), by_name=False),
    logits_learning_rate=Real(minimum=0, minimum_open=True),
    logits_weight_decay=Real(minimum=0),
    epsilon=Real(minimum=0, minimum_open=True),
)
class FAMO(LossWeighting):
    """FAMO: fast adaptive multitask optimisation, balancing the losses' log-decrease.

    Task logits `ξ` (initially 0), `z = softmax(ξ)`, `D_k = L_k − m_k + ε`
    with lower bounds `m_k` (default 0) and ε = `epsilon` (default 1e-8). The model minimises
    `Σ_k z_k log D_k / sg[Σ_k z_k / D_k]`, whose gradient is that of the
    weights `w_k = sg[(z_k/D_k) / Σ_j z_j/D_j]` on the losses. After the
    optimizer step the losses are recomputed on the same batch without a
    gradient (in training mode, as the reference code does), and
    `δ = log D(before) − log D(after)` drives one Adam step (learning rate
    `logits_learning_rate`, L2 weight decay `logits_weight_decay`, as
    PyTorch's Adam applies it) on `ξ` along `(∂z/∂ξ)ᵀ δ`. The logits and their
    Adam moments are saved with the model.

    A loss below its lower bound is an error that names the task: the
    training engine checks the batch's losses before the step and the losses
    after it, before the logits' update, against `loss_lower_bounds`.
    `after_update` returns the new logits and Adam moments; the engine
    assigns them. Once a task's loss reaches its bound exactly, `D_k = ε`:
    with the paper's ε = 1e-8 every other task's weight falls to about `ε/D_j`
    (1e-8 for a loss of 1) and those tasks stop learning, as the published
    method does. A larger `epsilon` bounds the ratio of two weights by
    `(D_j + ε)/ε` and avoids it.

    Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023;
    learning rate 0.025, weight decay 1e-3.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        min_losses: the lower bounds `m_k` of the losses, one per task in the model's output order, default
            None (all 0, the paper's).
        logits_learning_rate: the Adam learning rate of the logits `ξ`, default 0.025 (the paper's).
        logits_weight_decay: their L2 weight decay, default 1e-3 (the paper's).
        epsilon: ε added to `L_k − m_k`, default 1e-8 (the paper's).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.FAMO({"a": "mse", "b": "mse"})
    """

    needs_non_negative_losses = True
    needs_losses_after_update = True

    def __init__(
        self,
        losses=None,
        min_losses=None,
        logits_learning_rate=0.025,
        logits_weight_decay=1e-3,
        epsilon=1e-8,
        name=None,
    ):
        super().__init__(losses, name=name)
        self.min_losses = min_losses
        self.logits_learning_rate = logits_learning_rate
        self.logits_weight_decay = logits_weight_decay
        self.epsilon = epsilon

    def build_state(self, state, task_names):
        k = len(task_names)
        if self.min_losses is not None:
            per_task(self.min_losses, task_names, "min_losses", type(self).__name__)
        for name in ("logits", "logits_adam_m", "logits_adam_v"):
            state.variable(name, (k,))
        state.variable("logits_adam_steps", ())
        # Per task, the training steps on which its loss sat at its lower bound and starved another task (`run_warnings`).
        state.variable("steps_at_bound", (k,))
        self._task_names = list(task_names)

    def loss_lower_bounds(self, num_tasks):
        """The `min_losses` (zeros by default): `D` must stay positive for its log."""
        return list(self.min_losses) if self.min_losses is not None else [0.0] * num_tasks

    def _log_gap(self, losses):
        """`log D = log(L − m + ε)`; the engine has checked `L ≥ m` (`loss_lower_bounds`)."""
        return keras.ops.log(
            losses - keras.ops.convert_to_tensor(self.loss_lower_bounds(losses.shape[0]), losses.dtype) + self.epsilon
        )

    def weights(self, losses, state, training):
        z = keras.ops.softmax(state["logits"])
        ratio = z / keras.ops.exp(self._log_gap(losses))
        weights = ratio / keras.ops.sum(ratio)
        if not training:
            return weights, {}
        # A task at its bound starves the others when some weight falls below 1e-3 of the largest.
        bounds = keras.ops.convert_to_tensor(self.loss_lower_bounds(losses.shape[0]), losses.dtype)
        starved = keras.ops.min(weights) < 1e-3 * keras.ops.max(weights)
        at_bound = keras.ops.cast(keras.ops.logical_and(losses <= bounds, starved), "float32")
        return weights, {"steps_at_bound": state["steps_at_bound"] + at_bound}

    def run_warnings(self, state):
        """Once a task's loss sits at its bound, `D_k = ε` and every other task's weight falls to about `ε/D_j`."""
        stuck = [task for task, steps in zip(self._task_names, state["steps_at_bound"]) if steps > 0]
        if not stuck:
            return []
        return [
            f"FAMO: the loss of {', '.join(repr(task) for task in stuck)} reached its lower bound exactly "
            f"(`min_losses`, 0 by default), where D = epsilon = {self.epsilon:g}: every other task's weight then "
            "falls to about epsilon / its loss and those tasks stop learning. A larger `epsilon` (e.g. 1e-3) "
            "bounds the ratio of two weights by (loss + epsilon) / epsilon."
        ]

    def after_update(self, state, losses_before, losses_after):
        """One Adam step on the logits from the log-decrease `δ` of the batch's losses; the new logits and moments."""
        delta = self._log_gap(losses_before) - self._log_gap(losses_after)
        logits = state["logits"]
        z = keras.ops.softmax(logits)
        # (∂z/∂ξ)ᵀ δ for the softmax Jacobian diag(z) − z zᵀ.
        gradient = z * (delta - keras.ops.sum(z * delta)) + self.logits_weight_decay * logits
        beta_1, beta_2, epsilon = 0.9, 0.999, 1e-8
        steps = state["logits_adam_steps"] + 1.0
        m = beta_1 * state["logits_adam_m"] + (1 - beta_1) * gradient
        v = beta_2 * state["logits_adam_v"] + (1 - beta_2) * keras.ops.square(gradient)
        m_hat = m / (1 - keras.ops.power(beta_1, steps))
        v_hat = v / (1 - keras.ops.power(beta_2, steps))
        return {
            "logits": logits - self.logits_learning_rate * m_hat / (keras.ops.sqrt(v_hat) + epsilon),
            "logits_adam_m": m,
            "logits_adam_v": v,
            "logits_adam_steps": steps,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "min_losses": self.min_losses,
            "logits_learning_rate": self.logits_learning_rate,
            "logits_weight_decay": self.logits_weight_decay,
            "epsilon": self.epsilon,
        }
