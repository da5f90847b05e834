"""OL-AUX: auxiliary-task weights learned online from their long-term help to the main task."""

import keras

from keras_mtl.arguments import Boolean, Integer, Real, declare_arguments
from keras_mtl.gradients.auxiliary import _AuxiliaryMethod
from keras_mtl.registry import register


@register("ol_aux")
@declare_arguments(
    update_every=Integer(minimum=1), weight_learning_rate=Real(minimum=0, minimum_open=True), nonnegative=Boolean()
)
class OLAux(_AuxiliaryMethod):
    """OL-AUX: raise an auxiliary task's weight while its gradient keeps helping the main task.

    The main task m has weight 1; each auxiliary k has a weight `w_k`
    (initially 1), and the update is `d = Jᵀ w`. After N training steps
    of learning rate α, a first-order expansion gives the effect of the
    weights on the main loss, `∂L_m(θ_{t+N})/∂w_k ≈ −Σ_{j<N} α_j ⟨g_m, g_k⟩`
    (the Gramian row `G[m, :]`, one row per step). So every step adds
    `c ← c − α G[m, :]`, and every N-th step takes one gradient step on
    the weights and starts a new window:

        w_k ← w_k − β c_k = w_k + β Σ_{j<N} α_j ⟨g_m, g_k⟩,    c ← 0.

    An auxiliary whose gradient points along the main task's gains weight,
    an opposing one loses it, an orthogonal (or zero) one keeps it; between
    updates the weights do not change. A step uses the weights the window
    started with, the update coming after it, as in the authors' code. With
    `nonnegative=True` an update that would take a weight below 0 leaves it
    at 0, from where it can grow again. α is the optimizer's current
    learning rate. Evaluation changes nothing.

    Lin, Baweja, Kantor, Held, "Adaptive Auxiliary Task Weighting for
    Reinforcement Learning", NeurIPS 2019. Defaults from the authors' code
    (Xingyu-Lin/auxiliary-tasks-rl, `olaux/ddpg.py`): N = 5
    (`aux_update_interval`), β = 5 (`aux_base_lr`: the code multiplies the
    mean of the N products by 5·N, i.e. the sum by 5), and weights clipped
    at 0 after each update. Left out here: the authors' optional moving
    average of the last gradients before the products
    (`aux_filter_interval`, which needs per-parameter state) and their
    optional log-losses (give log losses as the per-task losses to get them).
    Other implementations differ: the multitask_ug port (`OLAUX`) applies
    ReLU to the weights only where they are used (`constrained_weights`,
    off by default) and updates every N+1 steps; the vub-dl/SLGrad baseline
    (`Olaux`) starts its step counter at 0.4, which never equals N = 2, so
    its weights never update (not reproduced: this counter counts whole
    steps from 0).

    Args:
        losses: the per-task losses.
        main_task: the name of the main task (required).
        update_every: N ≥ 1, the steps between weight updates.
        weight_learning_rate: β > 0, the weights' learning rate.
        nonnegative: whether an update clips the auxiliary weights at 0.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.OLAux({"main": "mse", "aux": "mse"}, main_task="main", update_every=5)
    """

    def __init__(
        self, losses=None, main_task=None, update_every=5, weight_learning_rate=5.0, nonnegative=True, name=None
    ):
        super().__init__(losses, main_task=main_task, name=name)
        self.update_every = update_every
        self.weight_learning_rate = weight_learning_rate
        self.nonnegative = nonnegative

    def build_state(self, state, task_names):
        super().build_state(state, task_names)  # checks main_task
        k = len(task_names)
        state.variable("task_weights", (k,), initializer="ones")
        # c = −Σ α⟨g_m, g_k⟩ over the current window (the main task's entry is never used).
        state.variable("accumulated_gradient", (k,))
        state.variable("steps_in_window", ())

    def gradient_weights(self, gradients, state, training):
        weights = state["task_weights"]
        if not training:
            return weights, {}
        learning_rate = keras.ops.cast(gradients.learning_rate, gradients.gramian.dtype)
        accumulated = state["accumulated_gradient"] - learning_rate * gradients.gramian[self._main]
        steps = state["steps_in_window"] + 1.0
        window_ends = steps >= self.update_every
        zero = keras.ops.zeros_like(accumulated)
        return weights, {
            "task_weights": keras.ops.where(window_ends, self._updated_weights(weights, accumulated), weights),
            "accumulated_gradient": keras.ops.where(window_ends, zero, accumulated),
            "steps_in_window": keras.ops.where(window_ends, 0.0, steps),
        }

    def _updated_weights(self, weights, accumulated):
        """`w − β c`, clipped at 0 if `nonnegative`, with the main task's weight kept at 1."""
        updated = weights - self.weight_learning_rate * accumulated
        if self.nonnegative:
            updated = keras.ops.maximum(updated, 0.0)
        return self._with_main_weight(updated)

    def get_config(self):
        return {
            **super().get_config(),
            "update_every": self.update_every,
            "weight_learning_rate": self.weight_learning_rate,
            "nonnegative": self.nonnegative,
        }
