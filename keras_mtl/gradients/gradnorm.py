import keras

from keras_mtl.arguments import Real, declare_arguments
from keras_mtl.gradients._gramian import gradient_norms
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@register("gradnorm")
@declare_arguments(alpha=Real(minimum=0))
class GradNorm(GradientMethod):
    """GradNorm: learned task weights that equalise the tasks' training rates.

    Learnable weights `w` (initially 1) combine the task gradients, `d = Jᵀ w`.
    On the last shared layer `W`, `G_k = ‖∇_W w_k L_k‖`; with the relative
    losses `L̃_k = L_k(t) / L_k(0)` and the inverse training rates
    `r_k = L̃_k / mean(L̃)`, the weights are trained by the model's optimizer
    on `Σ_k |G_k − sg[mean(G)·r_k^α]|` (their gradient is `state_gradients`)
    and renormalised to sum to K after every step (`after_update`). `W` is
    the last shared layer's parameters in parameter mode, the shared
    representation in representation mode.

    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing
    in Deep Multitask Networks", ICML 2018; α = 1.5.

    Departures: none from the paper's Algorithm 1 (w learned directly from
    1, `L(0)` the first step's losses, `mean(G)·r^α` held constant, L1
    loss, w and the network updated from the same step's gradients, w
    renormalised to sum to K). The paper leaves the weights' optimizer
    open: here it is the model's, at its learning rate. LibMTL departs:
    it keeps w = 1 for the first epoch, takes `L(0)` as that epoch's mean
    losses, learns `w = K·softmax(s)` (the gradient flows through the
    softmax; no renormalisation), and takes `G_k` over all shared
    parameters, so its weights follow another course from the first step.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        alpha: α, the strength of the pull towards equal training rates, default 1.5 (the paper's).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.GradNorm({"a": "mse", "b": "mse"}, alpha=1.5)
    """

    def __init__(self, losses=None, alpha=1.5, name=None):
        super().__init__(losses, name=name)
        self.alpha = alpha

    def build_state(self, state, task_names):
        k = len(task_names)
        state.variable("gradnorm_weights", (k,), initializer="ones", trainable=True)
        state.variable("initial_losses", (k,))
        state.variable("steps", ())

    def gradient_weights(self, gradients, state, training):
        if not training:
            return state["gradnorm_weights"], {}
        return state["gradnorm_weights"], {
            "steps": state["steps"] + 1.0,
            "initial_losses": _initial_losses(gradients, state),
        }

    def state_gradients(self, gradients, weights, state):
        """The gradient of GradNorm's loss with respect to the weights, from the state the step began with."""
        norms = gradient_norms(gradients.last_layer_gramian)
        # G_k = ‖∇_W w_k L_k‖ = |w_k| n_k: the paper's norm, also for a weight that a large step made negative.
        weighted_norms = keras.ops.abs(weights) * norms
        relative_losses = keras.ops.divide_no_nan(gradients.losses, _initial_losses(gradients, state))
        rates = keras.ops.divide_no_nan(relative_losses, keras.ops.mean(relative_losses))
        target = keras.ops.stop_gradient(keras.ops.mean(weighted_norms) * rates**self.alpha)
        # d/dw_k Σ_j |G_j − target_j| with the target held fixed.
        return {"gradnorm_weights": keras.ops.sign(weighted_norms - target) * keras.ops.sign(weights) * norms}

    def after_update(self, state, losses_before, losses_after):
        """The weights, after the optimizer's step on them, rescaled to sum to K."""
        weights = state["gradnorm_weights"]
        return {"gradnorm_weights": weights * weights.shape[0] / keras.ops.sum(weights)}

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


def _initial_losses(gradients, state):
    """`L(0)`, the losses of the first training step: this step's losses if no step has run yet."""
    return keras.ops.where(keras.ops.equal(state["steps"], 0.0), gradients.losses, state["initial_losses"])
