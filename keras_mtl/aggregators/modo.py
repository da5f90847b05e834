"""MoDo (Chen, Fernando, Ying & Chen 2023, "Three-Way Trade-Off in Multi-Objective Learning")."""

from keras import ops

from keras_mtl.aggregators._common import as_float64, float64_function, matvec
from keras_mtl.aggregators._cross import cross_matrix, prepare_cross, project_simplex
from keras_mtl.arguments import Integer, Real, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@float64_function
def modo_weights(cross, weights, gamma=0.1, rho=0.1):
    """MoDo's step on its task weights: ``λ ← Π_Δ(λ − γ (A λ + ρ λ))``, ``A = J_1 J_2^T``.

    One projected gradient step on ``½ ||J^T λ||^2 + ½ ρ ||λ||^2`` over the
    simplex, the gradient ``J J^T λ`` estimated without bias from two
    independent batches (double sampling); as the authors' code
    (heshandevaka/Trade-Off-MOL ``LibMTL/weighting/MoDo.py``), LibMTL
    (``weighting/MoDo.py``) and TorchJD (``MoDoWeighting``) compute it:
    ``J_1 (J_2^T λ)``, with A not symmetrised.

    Args:
        cross: (K, K) ``A = J_1 J_2^T``, ``A_ij = g_i(batch 1) . g_j(batch 2)``.
        weights: (K,) the current λ, on the simplex.
        gamma: the step size γ > 0.
        rho: the ridge ρ >= 0.

    Returns:
        float32 ``(update weights, new λ)``, both the new λ, unless A is not
        finite: then zero update weights and λ unchanged. The step is in
        float64, not scaled: γ applies to A as it is.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> update, new = modo_weights(gramian, np.array([0.5, 0.5]), gamma=0.1, rho=0.1)  # both batches alike
        >>> # λ - 0.1 (Gλ + 0.1 λ) = (0.495, 0.445), projected on the simplex:
        >>> np.round(np.asarray(new), 4)
        array([0.525, 0.475], dtype=float32)
    """
    cross, ok = prepare_cross(cross)
    weights = as_float64(weights)
    stepped = project_simplex(weights - gamma * (matvec(cross, weights) + rho * weights))
    return ops.cast(ops.where(ok, stepped, 0.0), "float32"), ops.cast(ops.where(ok, stepped, weights), "float32")


@register("modo")
@declare_arguments(gamma=Real(minimum=0, minimum_open=True), rho=Real(minimum=0), batches=Integer(minimum=2, maximum=3))
class MoDo(GradientMethod):
    """MoDo: task weights from two batches' cross products, the update on a third batch.

    Each step draws ``batches`` independent batches by dealing the batch
    `fit` gives it into that many interleaved parts (``fit`` shuffles, so
    they are independent batches of the training set): MoDo with
    ``batch_size=96`` and three batches uses three batches of 32. With the
    parts' Jacobians ``J_1, J_2(, J_3)``:

    - ``λ ← Π_Δ(λ − γ (J_1 J_2^T λ + ρ λ))`` (see `modo_weights`), λ kept
      across steps, saved with the model, and 1/K at the start;
    - three batches (default: the authors' ``three_grads`` option and
      LibMTL, whose trainer draws three batches): ``d = J_3^T λ``;
      two batches (TorchJD's "basic MoDo as described in the paper",
      Eq. 2.9b): ``d = ((J_1 + J_2) / 2)^T λ`` (the authors' older code sums
      ``J_1 + J_2`` and leaves the halving to the learning rate).

    Heads get their task's gradient on the whole batch: for losses averaged
    over samples, the mean of the parts' gradients, as LibMTL gives them.
    The logged weights are the new λ. MoDo needs the shared parameters'
    Jacobians (no ``representation`` mode). A step costs one forward and K
    backward passes on the whole batch (losses, logs, heads) and one forward
    and K backward passes on each part.

    Defaults γ = 0.1, ρ = 0.1: the authors' configuration
    (Trade-Off-MOL ``LibMTL/config.py``: ``gamma_modo``, ``rho_modo``) and
    TorchJD; LibMTL uses γ = 0.001. Every batch must hold at least
    ``batches`` samples (an error names the method otherwise).

    Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective
    Learning: Optimization, Generalization and Conflict-Avoidance",
    NeurIPS 2023 (JMLR 2024).

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        gamma: γ, the step size of λ, default 0.1 (the authors' configuration and TorchJD).
        rho: ρ, the regularisation of λ, default 0.1 (the authors' and TorchJD).
        batches: 3 (default: the update on a third batch, the authors' `three_grads` and LibMTL) or 2 (the
            update on the mean of the two, the paper's Eq. 2.9b).
        name: the method's name, default None (its registered id).

    Examples:
        >>> method = keras_mtl.MoDo({"a": "mse", "b": "mse"}, gamma=0.1, rho=0.1)
        >>> # model.compile(optimizer, loss=method); model.fit(x, y, batch_size=96)  # three batches of 32 per step
    """

    def __init__(self, losses=None, gamma=0.1, rho=0.1, batches=3, name=None):
        super().__init__(losses, name=name)
        self.gamma = gamma
        self.rho = rho
        self.batches = batches

    @property
    def batch_parts(self):
        return self.batches

    def build_state(self, state, task_names):
        state.variable(
            "modo_weights", (len(task_names),), initializer=lambda shape, dtype: ops.full(shape, 1.0 / shape[0], dtype)
        )

    def combine(self, gradients, state, training):
        first, second = gradients.part_jacobians[:2]
        weights, new_weights = modo_weights(cross_matrix(first, second), state["modo_weights"], self.gamma, self.rho)
        updated = gradients.part_jacobians[2] if self.batches == 3 else 0.5 * (first + second)
        return ops.matmul(weights, updated), weights, {"modo_weights": new_weights} if training else {}

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "rho": self.rho, "batches": self.batches}
