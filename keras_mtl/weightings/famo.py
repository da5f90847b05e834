import math

import tensorflow as tf

from keras_mtl.methods import LossWeighting, positive
from keras_mtl.registry import register


@register("famo")
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

    A loss below its lower bound is an error that names the task (checked
    before the step on the batch's losses, and after it, before the logits'
    update, on the losses after the step). Once a task's loss reaches its
    bound exactly, `D_k = ε`: with the paper's ε = 1e-8 every other task's
    weight falls to about `ε/D_j` (1e-8 for a loss of 1) and those tasks stop
    learning, as the published method does. A larger `epsilon` bounds the
    ratio of two weights by `(D_j + ε)/ε` and avoids it.

    Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023;
    learning rate 0.025, weight decay 1e-3.

    Example:

    >>> keras_mtl.FAMO({"a": "mse", "b": "mse"})
    """

    needs_non_negative_losses = True
    updates_after_step = True

    def __init__(self, losses=None, min_losses=None, logits_learning_rate=0.025, logits_weight_decay=1e-3, epsilon=1e-8, name=None):
        super().__init__(losses, name=name)
        self.min_losses = None if min_losses is None else [float(m) for m in min_losses]
        if self.min_losses is not None and not all(math.isfinite(m) for m in self.min_losses):
            raise ValueError(f"min_losses must be finite, got {self.min_losses}.")
        self.logits_learning_rate = positive(logits_learning_rate, "logits_learning_rate")
        self.logits_weight_decay = float(logits_weight_decay)
        self.epsilon = positive(epsilon, "epsilon")
        self._task_names = None

    def build_state(self, state, task_names):
        k = len(task_names)
        if self.min_losses is not None and len(self.min_losses) != k:
            raise ValueError(f"min_losses has {len(self.min_losses)} entries for {k} tasks {list(task_names)}.")
        self._task_names = list(task_names)
        for name in ("logits", "logits_adam_m", "logits_adam_v"):
            state.variable(name, (k,))
        state.variable("logits_adam_steps", ())

    def _log_gap(self, losses, when):
        """`log D`, after checking every loss against its lower bound (a negative `D` has no log)."""
        if self.min_losses is None:
            # Negative losses are refused before any method sees them.
            return tf.math.log(losses + self.epsilon)
        min_losses = tf.constant(self.min_losses)
        checks = [
            tf.debugging.Assert(
                losses[k] >= min_losses[k],
                [f"keras_mtl: FAMO: the loss of task '{name}' {when} is below its lower bound min_losses = {self.min_losses[k]}", "loss:", losses[k]],
            )
            for k, name in enumerate(self._task_names)
        ]
        with tf.control_dependencies(checks):
            return tf.math.log(losses - min_losses + self.epsilon)

    def task_weights(self, losses, state, training):
        z = tf.nn.softmax(state["logits"])
        ratio = z / tf.exp(self._log_gap(losses, "before the step"))
        return ratio / tf.reduce_sum(ratio)

    def after_step(self, state, losses_before, losses_after):
        delta = self._log_gap(losses_before, "before the step") - self._log_gap(losses_after, "after the step")
        z = tf.nn.softmax(state["logits"])
        # (∂z/∂ξ)ᵀ δ for the softmax Jacobian diag(z) − z zᵀ.
        gradient = z * (delta - tf.reduce_sum(z * delta)) + self.logits_weight_decay * state["logits"]
        beta_1, beta_2, epsilon = 0.9, 0.999, 1e-8
        # After both losses: a step whose losses are refused must not count.
        with tf.control_dependencies([losses_before, losses_after]):
            steps = state["logits_adam_steps"].assign_add(1.0)
        m = state["logits_adam_m"].assign(beta_1 * state["logits_adam_m"] + (1 - beta_1) * gradient)
        v = state["logits_adam_v"].assign(beta_2 * state["logits_adam_v"] + (1 - beta_2) * tf.square(gradient))
        m_hat = m / (1 - beta_1**steps)
        v_hat = v / (1 - beta_2**steps)
        state["logits"].assign_sub(self.logits_learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon))

    def get_config(self):
        return {
            **super().get_config(),
            "min_losses": self.min_losses,
            "logits_learning_rate": self.logits_learning_rate,
            "logits_weight_decay": self.logits_weight_decay,
            "epsilon": self.epsilon,
        }
