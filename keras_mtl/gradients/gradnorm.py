import tensorflow as tf

from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@register("gradnorm")
class GradNorm(GradientMethod):
    """GradNorm: learned task weights that equalise the tasks' training rates.

    Learnable weights `w` (initially 1) combine the task gradients, `d = Jᵀ w`.
    On the last shared layer `W`, `G_k = ‖∇_W w_k L_k‖`; with the relative
    losses `L̃_k = L_k(t) / L_k(0)` and the inverse training rates
    `r_k = L̃_k / mean(L̃)`, the weights are trained by the model's optimizer
    on `Σ_k |G_k − sg[mean(G)·r_k^α]|` and renormalised to sum to K after every
    step. `W` is the last shared layer's parameters in parameter mode, the
    shared representation in representation mode.

    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing
    in Deep Multitask Networks", ICML 2018; α = 1.5.

    Example:

    >>> keras_mtl.GradNorm({"a": "mse", "b": "mse"}, alpha=1.5)
    """

    def __init__(self, losses=None, alpha=1.5, name=None):
        super().__init__(losses, name=name)
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        self.alpha = float(alpha)

    def build_state(self, state, task_names):
        k = len(task_names)
        state.variable("gradnorm_weights", (k,), initializer="ones", trainable=True)
        state.variable("initial_losses", (k,))
        state.variable("steps", ())

    def task_weights(self, gradients, state, training):
        if training:
            # L(0): the losses of the first training step.
            first = tf.equal(state["steps"].assign_add(1.0), 1.0)
            state["initial_losses"].assign(tf.where(first, gradients.losses, state["initial_losses"]))
        return tf.convert_to_tensor(state["gradnorm_weights"])

    def state_gradients(self, gradients, weights, state):
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gradients.last_layer_gramian), 0.0))
        weighted_norms = weights * norms
        relative_losses = tf.math.divide_no_nan(gradients.losses, state["initial_losses"])
        rates = tf.math.divide_no_nan(relative_losses, tf.reduce_mean(relative_losses))
        target = tf.stop_gradient(tf.reduce_mean(weighted_norms) * rates**self.alpha)
        # d/dw_k Σ_j |w_j n_j − target_j| with the target held fixed.
        return [(tf.sign(weighted_norms - target) * norms, state["gradnorm_weights"])]

    def after_apply(self, state):
        weights = state["gradnorm_weights"]
        weights.assign(weights * weights.shape[0] / tf.reduce_sum(weights))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
