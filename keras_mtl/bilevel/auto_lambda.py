"""Auto-Lambda: task weights learned by a meta step through a virtual SGD step."""

import keras
import numpy as np

from keras_mtl.arguments import Choice, Real, TaskNames, declare_arguments
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register

PARAMETRIZATIONS = ("direct", "softmax")
# PyTorch's Adam defaults, which the authors' meta optimizer uses.
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8


@register("auto_lambda")
@declare_arguments(
    primary_tasks=TaskNames(optional=True),
    meta_learning_rate=Real(minimum=0, minimum_open=True),
    initial_weight=Real(minimum=0),
    parametrization=Choice(PARAMETRIZATIONS),
)
class AutoLambda(LossWeighting):
    """Auto-Lambda: weights λ that minimise the primary tasks' loss one SGD step ahead.

    Every training step deals its batch into two interleaved halves, an
    inner part and an outer part (independent batches, since `fit`
    shuffles; see `keras_mtl.training.tasks.batch_parts`):

    1. per-task gradients on the inner part, `g_k = ∇_θ L_k(inner)`, over all
       of the model's parameters;
    2. a virtual SGD step `θ′ = θ − α (Σ_k λ_k g_k + ∇R)`, α the optimizer's
       current learning rate, R the model's regularisation losses;
    3. the outer gradient `u = ∇_{θ′} Σ_{k ∈ primary} L_k(outer)` at θ′;
    4. the meta gradient `∂L_outer(θ′)/∂λ_k = −α ⟨g_k, u⟩`, computed exactly
       as an inner product (the authors approximate the same product by a
       central finite difference at θ ± εu, ε = 0.01/‖u‖, which costs two
       more forward passes; here the per-task gradients already exist);
    5. one Adam step on λ (β = 0.9, 0.999, ε = 1e-8, learning rate
       `meta_learning_rate`), written as a pure state update;
    6. the real step: the gradient of `Σ_k λ_k L_k + R` on the whole batch
       (both parts) with the new λ, applied by the model's optimizer.

    The authors' real step uses the inner batch only, because their outer
    batch is an extra draw from the training set; here the outer part is
    half of the batch `fit` gives, and leaving it out of the update would
    train on half the data. The virtual step is plain SGD: the authors add
    the SGD optimizer's momentum buffer and weight decay (a Keras optimizer
    keeps no such buffer in general); the model's regularisers play the
    weight decay's part.

    Liu, James, Davison, Johns, "Auto-Lambda: Disentangling Dynamic Task
    Relationships", TMLR 2022. Defaults from the authors' code
    (lorenmt/auto-lambda, `auto_lambda.py`, `trainer_dense.py`): λ
    initialised to 0.1 and unconstrained (`parametrization="direct"`),
    meta learning rate 1e-4 (their NYUv2 default; 3e-5 for CityScapes,
    3e-4 for CIFAR-100), all tasks primary (multi-task learning; a subset
    is auxiliary learning). `parametrization="softmax"` is LibMTL's
    variant (`trainer.py`): λ = softmax(ω), Adam on ω (LibMTL's
    `outer_lr` is 1e-3), the initial value then irrelevant (equal ω give
    λ = 1/K).

    Cost per step: one forward pass of the batch, K + 2 backward passes
    (K on the inner part's losses, one for the real step, one for the
    regulariser), and one forward and backward pass of the outer part at
    θ′; K × P floats of per-task gradients (P: all parameters). Parameter
    mode only. Evaluation uses the current λ and changes nothing. λ may
    turn negative in the direct parametrisation, as in the authors' code.
    A batch of one sample has an empty outer part: λ then stays. Under a
    `tf.distribute` strategy each replica deals its own shard, which gives
    one device's step exactly when every shard's size is even.

    Args:
        losses: the per-task losses.
        primary_tasks: the names of the tasks whose outer loss λ serves;
            None: all tasks.
        meta_learning_rate: Adam's learning rate for λ (or ω), > 0.
        initial_weight: λ's initial value (ω's in the softmax variant).
        parametrization: `"direct"` (λ itself) or `"softmax"` (λ = softmax(ω)).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.AutoLambda({"depth": "mse", "normals": "mse"}, primary_tasks=["depth"], meta_learning_rate=1e-4)
    """

    train_step_kind = "meta_weighted"
    parameter_mode_only = True

    def __init__(
        self,
        losses=None,
        primary_tasks=None,
        meta_learning_rate=1e-4,
        initial_weight=0.1,
        parametrization="direct",
        name=None,
    ):
        super().__init__(losses, name=name)
        self.primary_tasks = primary_tasks
        self.meta_learning_rate = meta_learning_rate
        self.initial_weight = initial_weight
        self.parametrization = parametrization

    def build_state(self, state, task_names):
        primary = list(task_names) if self.primary_tasks is None else self.primary_tasks
        unknown = sorted(set(primary) - set(task_names))
        if unknown:
            raise ValueError(
                f"AutoLambda's primary_tasks names {unknown}, which are not tasks of the model ({list(task_names)})."
            )
        self._outer_weights = np.array([float(name in primary) for name in task_names], "float32")
        k = len(task_names)
        state.variable("meta_weights", (k,), initializer=keras.initializers.Constant(self.initial_weight))
        state.variable("meta_first_moment", (k,))
        state.variable("meta_second_moment", (k,))
        state.variable("meta_steps", ())

    def outer_weights(self):
        """(K,) the weights of the tasks' losses in the outer objective: 1 for a primary task, else 0."""
        return self._outer_weights

    def weights(self, losses, state, training):
        parameters = state["meta_weights"]
        weights = keras.ops.softmax(parameters) if self.parametrization == "softmax" else parameters
        return weights, {}

    def meta_update(self, state, alignments, learning_rate):
        """The new state after one Adam step on λ (or ω), from `alignments` (K,) `⟨g_k, u⟩` and the step's α."""
        alpha = keras.ops.cast(learning_rate, "float32")
        weight_gradient = -alpha * alignments
        if self.parametrization == "softmax":
            # Through the softmax's Jacobian diag(λ) − λλᵀ.
            weights, _ = self.weights(None, state, training=True)
            weight_gradient = weights * (weight_gradient - keras.ops.sum(weights * weight_gradient))
        steps = state["meta_steps"] + 1.0
        first = BETA_1 * state["meta_first_moment"] + (1.0 - BETA_1) * weight_gradient
        second = BETA_2 * state["meta_second_moment"] + (1.0 - BETA_2) * keras.ops.square(weight_gradient)
        corrected_first = first / (1.0 - BETA_1**steps)
        corrected_second = second / (1.0 - BETA_2**steps)
        step = self.meta_learning_rate * corrected_first / (keras.ops.sqrt(corrected_second) + EPSILON)
        return {
            "meta_weights": state["meta_weights"] - step,
            "meta_first_moment": first,
            "meta_second_moment": second,
            "meta_steps": steps,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "primary_tasks": self.primary_tasks,
            "meta_learning_rate": self.meta_learning_rate,
            "initial_weight": self.initial_weight,
            "parametrization": self.parametrization,
        }
