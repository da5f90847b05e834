import keras

from keras_mtl.gradients._gramian import gradient_norms
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

# The authors' guard, inside the log and in the norm ratio.
EPSILON = 1e-8


@register("db_mtl")
class DualBalancing(GradientMethod):
    """DB-MTL: log losses, their gradients smoothed over steps, and scaled to the largest one's norm.

    Loss-scale balancing: each task's gradient is that of `log(L_k + ε)`,
    `h_k = g_k / (L_k + ε)`. These are smoothed over steps by an exponential
    moving average, `ĝ_k ← β_t ĝ_k + (1 − β_t) h_k` with `β_t = β / t^σ` at
    step t = 1, 2, ... (ĝ starts at 0, no bias correction). Gradient-magnitude
    balancing: every `ĝ_k` is rescaled to the norm of the largest,
    `d = Σ_k α_k ĝ_k` with `α_k = max_j ‖ĝ_j‖ / (‖ĝ_k‖ + ε)`, so every task
    moves the shared parameters equally far, at the pace of the one that
    would move them most. ε = 1e-8. The logged weights are those of the
    step's own task gradients in `d`, `α_k (1 − β_t) / (L_k + ε)`.

    Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, "Dual-Balancing for
    Multi-Task Learning", arXiv 2308.12029 (Neural Networks). The rule and
    the defaults (β = 0.9, σ = 0) are those of LibMTL's `DB_MTL`, by the
    authors.

    Args:
        beta: β in [0, 1). β = 0 keeps no average: `d = Jᵀw` with
            `w_k = max_j ‖h_j‖ / ((‖h_k‖ + ε)(L_k + ε))` and
            `‖h_k‖ = sqrt(G_kk)/(L_k + ε)`, from the Gramian alone, which also
            works in representation mode (the authors' code refuses it).
            β > 0 keeps ĝ, a K×P state (one column per shared parameter), so
            the method then runs in parameter mode only, on a model whose
            shared parameters are known at compile (see
            `MultiTaskState.parameter_variable`).
        beta_sigma: σ ≥ 0, the decay of β_t (0: constant).
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    A task whose gradients are 0 adds nothing to `d` (its scale is large, on
    a zero average); if every one is 0, so is `d`. Their task heads get
    `∇ log L_k`; here, as for every gradient method, the heads get `∇ L_k`.
    The losses must be non-negative.

    Examples:
        >>> keras_mtl.DualBalancing({"depth": "mae", "seg": "sparse_categorical_crossentropy"}, beta=0.9)
    """

    needs_non_negative_losses = True

    def __init__(self, losses=None, beta=0.9, beta_sigma=0.0, name=None):
        super().__init__(losses, name=name)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"DualBalancing: beta must be in [0, 1), got {beta}.")
        if not 0.0 <= beta_sigma < float("inf"):
            raise ValueError(f"DualBalancing: beta_sigma must be >= 0 and finite, got {beta_sigma}.")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)

    @property
    def parameter_mode_only(self):
        return self.beta > 0.0

    def build_state(self, state, task_names):
        if self.beta > 0.0:
            state.parameter_variable("smoothed_gradients", len(task_names))
            state.variable("steps", ())

    def combine(self, gradients, state, training):
        if self.beta == 0.0:
            return super().combine(gradients, state, training)
        inverse_losses = 1.0 / (gradients.losses + EPSILON)
        steps = state["steps"] + 1.0
        beta = self.beta / steps**self.beta_sigma
        log_gradients = gradients.jacobian * inverse_losses[:, None]
        smoothed = log_gradients + beta * (state["smoothed_gradients"] - log_gradients)
        scales = _balancing_scales(keras.ops.norm(smoothed, axis=1))
        direction = keras.ops.matmul(scales, smoothed)
        return direction, scales * (1.0 - beta) * inverse_losses, {"smoothed_gradients": smoothed, "steps": steps}

    def gradient_weights(self, gradients, state, training):
        inverse_losses = 1.0 / (gradients.losses + EPSILON)
        return _balancing_scales(gradient_norms(gradients.gramian) * inverse_losses) * inverse_losses, {}

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma}


def _balancing_scales(norms):
    """`α_k = max_j n_j / (n_k + ε)`: each vector's factor to the largest norm."""
    return keras.ops.max(norms) / (norms + EPSILON)
