import keras

from keras_mtl.aggregators._common import project_weighted_simplex
from keras_mtl.arguments import Choice, Real, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register("moco")
@declare_arguments(
    beta=Real(minimum=0, maximum=1, minimum_open=True),
    gamma=Real(minimum=0, minimum_open=True),
    rho=Real(minimum=0),
    normalization=Choice(NORMALIZATIONS),
)
class MoCo(GradientMethod):
    """MoCo: stochastic MGDA on tracked task gradients, which corrects its gradient bias.

    Each step tracks the task gradients, `Y ← Y − β(Y − J)` (Y starts at 0),
    optionally rescales the rows of Y to `Ŷ` (`normalization`), takes one
    projected gradient step of the regularised min-norm problem
    `λ ← Π_Δ(λ − γ(Ŷ Ŷᵀ λ + ρ λ))` (λ starts at 1/K; Π_Δ the Euclidean
    projection onto the simplex), and updates the shared parameters along
    `d = Ŷᵀλ`. Averaging the gradients over steps is what removes the bias
    that a min-norm solve on one batch's gradients has "without increasing
    the batch size".

    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient
    Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR
    2023. The rule and the defaults are the first author's code
    (heshandevaka/Trade-Off-MOL, `LibMTL/weighting/MoCo.py` and its config):
    β = γ = ρ = 0.1, constant, and `normalization="none"`.

    Args:
        beta: β in (0, 1], the tracking step.
        gamma: γ > 0, the step of λ.
        rho: ρ ≥ 0, the regulariser of λ's problem.
        normalization: how the rows Y_k are rescaled before λ's step and
            the update (the authors' options): "none"; "l2", to unit norm;
            "loss", divided by L_k; "loss+", divided by L_k‖Y_k‖. A row
            whose divisor is 0 stays as it is (the authors' code gives NaN).
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    LibMTL's `MoCo` ("based on the author's sharing code") is another
    variant, not offered here: it tracks the loss-scaled unit rows
    `L_k g_k/(‖g_k‖ + 1e-8)`, decays β and γ as β/√t, γ/√t, replaces Π_Δ
    by a softmax (a different map, which never reaches a face of the
    simplex), and defaults to β = 0.5, ρ = 0. This class keeps the
    author's own rule, which is the one the paper's analysis is about.

    State: Y (K×P, one column per shared parameter: parameter mode only,
    and a model whose shared parameters are known at compile, see
    `MultiTaskState.parameter_variable`) and λ (K). The logged weights are
    λ, the weights on the tracked rows. Cost: K backward passes and O(K·P)
    per step.

    Examples:
        >>> keras_mtl.MoCo({"depth": "mae", "seg": "sparse_categorical_crossentropy"}, beta=0.1, gamma=0.1, rho=0.1)
    """

    parameter_mode_only = True

    def __init__(self, losses=None, beta=0.1, gamma=0.1, rho=0.1, normalization="none", name=None):
        super().__init__(losses, name=name)
        self.beta = beta
        self.gamma = gamma
        self.rho = rho
        self.normalization = normalization
        # A divisor L_k must be a loss's size: the engine refuses negative losses, naming the task.
        self.needs_non_negative_losses = normalization in ("loss", "loss+")

    def build_state(self, state, task_names):
        k = len(task_names)
        state.parameter_variable("tracked_gradients", k)
        state.variable("weights", (k,), initializer=keras.initializers.Constant(1.0 / k))

    def combine(self, gradients, state, training):
        tracked = state["tracked_gradients"] - self.beta * (state["tracked_gradients"] - gradients.jacobian)
        rows = tracked / self._divisors(tracked, gradients.losses)[:, None]
        weights = state["weights"]
        step = keras.ops.matmul(rows, keras.ops.matmul(weights, rows)) + self.rho * weights
        weights = project_weighted_simplex((weights - self.gamma * step)[None], keras.ops.ones_like(weights))[0]
        return keras.ops.matmul(weights, rows), weights, {"tracked_gradients": tracked, "weights": weights}

    def _divisors(self, tracked, losses):
        """Per row, what `normalization` divides it by; 1 where that is 0."""
        if self.normalization == "none":
            return keras.ops.ones_like(losses)
        norms = keras.ops.norm(tracked, axis=1)
        divisors = {"l2": norms, "loss": losses, "loss+": losses * norms}[self.normalization]
        return keras.ops.where(divisors > 0, divisors, 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "gamma": self.gamma,
            "rho": self.rho,
            "normalization": self.normalization,
        }
