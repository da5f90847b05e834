"""Suteu & Guo's orthogonal-gradient regulariser: a penalty on the squared cosines between task gradients."""

from keras import ops

from keras_mtl.methods import MultiTaskLoss, positive
from keras_mtl.registry import register

PARAMETERS = ("all", "last_layer")


@register("orthogonal_gradients")
class OrthogonalGradients(MultiTaskLoss):
    """Task gradients pushed towards orthogonality by a penalty on their squared cosines.

    The model is trained on

        L = Σ_k L_k + R + λ · 1/(K(K−1)) Σ_{i≠j} cos²(g_i, g_j),

    where `g_k` is the gradient of task k's loss with respect to the shared
    parameters and R the model's regularisation losses. With the Gramian
    `G = J Jᵀ` of the task gradients, `cos(g_i, g_j) = G_ij / √(G_ii G_jj)`.
    The penalty depends on gradients, so its own gradient is second order:
    the engine differentiates through the task gradients (double backprop),
    and every parameter, the heads included, gets
    `Σ_k ∇L_k + ∇R + λ ∇penalty`. A step costs 1.6 to 5 times the `mean`
    gradient method's (`keras-mtl speed`, K = 2 to 8, MLP and CNN, CPU).
    The penalty is 0 for orthogonal task gradients and λ when all are
    parallel or opposite; it has no say in where the losses go, only in the
    angles between their gradients.

    Suteu & Guo, "Regularizing Deep Multi-Task Networks using Orthogonal
    Gradients", arXiv 1912.06844 (2019). Sources of each rule:

    - The abstract: a gradient regulariser "enforcing near orthogonal
      gradients", on the task gradients "within their shared parameters".
      The paper's body (its exact term and λ) was not available to this
      library; the rest comes from two independent third-party
      implementations, which agree on the squared cosine.
    - The squared cosine averaged over the K(K−1) ordered pairs, on the
      gradients of all shared parameters, added to the sum of the losses
      and differentiated with every parameter, heads included, λ = 10 by
      default: the `CosRegOptimizer` of danielmao2019/Pylon
      (`optimizers/multi_task_optimizers/gradient_regularization/`;
      its `per_layer` and `wrt_rep` options are off by default).
    - The gradients of the last shared layer's weights only
      (`parameters="last_layer"`), for K = 2: a third-party `CosRegNet`
      (recorded in the project's source notes), λ from its config.

    Degenerate inputs: a task whose gradient is zero has no direction; it
    counts as orthogonal to every other (cosine 0), and the penalty's
    gradient with respect to it is 0 (no ε: an ε in the norms would shrink
    the cosines of small but valid gradients). The cosines are computed
    from the Gramian divided by its largest diagonal entry (exact: a
    cosine does not change with the gradients' scale), so only the ratios
    of the gradients' norms matter, not their scale (tested: norm ratios of
    1e6, gradients of 1e-10 to 1e10); a task whose squared norm falls below
    ~1e-38 of the largest one's counts as zero.

    Logs: the task weights as 1 each (the losses enter the total
    unweighted), and the penalty `λ·mean cos²` of each step as
    `orthogonal_gradients_penalty` (its epoch mean). `loss` and evaluation
    report `Σ_k L_k + R`, without the penalty (evaluation has no gradients).

    Parameter mode only: `compile` refuses a model built with
    `representation`. SAM cannot wrap it.

    Args:
        losses: the per-task losses.
        penalty_weight: λ > 0, the penalty's weight.
        parameters: `"all"` (the gradients of all shared parameters) or
            `"last_layer"` (of the last shared layer's parameters alone).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.OrthogonalGradients({"depth": "mae", "seg": "sparse_categorical_crossentropy"}, penalty_weight=10.0)
    """

    # The engine differentiates `penalty` of the task gradients (`keras_mtl.training.backends`).
    train_step_kind = "gradient_penalty"
    parameter_mode_only = True

    def __init__(self, losses=None, penalty_weight=10.0, parameters="all", name=None):
        super().__init__(losses, name=name)
        if parameters not in PARAMETERS:
            raise ValueError(f"OrthogonalGradients: parameters must be one of {PARAMETERS}, got {parameters!r}.")
        self.penalty_weight = positive(penalty_weight, "OrthogonalGradients: penalty_weight")
        self.parameters = parameters

    def penalty(self, gradients):
        """λ · mean_{i≠j} cos²(g_i, g_j) of the task gradients (`TaskGradients`), differentiable in them."""
        gramian = gradients.gramian if self.parameters == "all" else gradients.last_layer_gramian
        return self.penalty_weight * mean_squared_cosine(gramian)

    def get_config(self):
        return {**super().get_config(), "penalty_weight": self.penalty_weight, "parameters": self.parameters}


def mean_squared_cosine(gramian):
    """`1/(K(K−1)) Σ_{i≠j} cos²_ij` with `cos_ij = G_ij / √(G_ii G_jj)`, 0 for a zero gradient.

    The Gramian is first divided by its largest diagonal entry, with the
    gradient stopped: the cosines are unchanged by any scale, so this is
    exact for the value and the gradient, and keeps the products of norms
    inside float32 at any scale. Zero norms take the safe branch of a
    double `where`, so their cosines and gradients are 0, never NaN.
    """
    num_tasks = gramian.shape[0]
    largest = ops.stop_gradient(ops.max(ops.diagonal(gramian)))
    gramian = gramian / ops.where(largest > 0, largest, 1.0)
    squared_norms = ops.diagonal(gramian)
    nonzero = squared_norms > 0
    inverse_norms = ops.where(nonzero, 1.0 / ops.sqrt(ops.where(nonzero, squared_norms, 1.0)), 0.0)
    cosines = gramian * inverse_norms[:, None] * inverse_norms[None, :]
    off_diagonal = 1.0 - ops.eye(num_tasks, dtype=cosines.dtype)
    return ops.sum(off_diagonal * cosines**2) / (num_tasks * (num_tasks - 1))
