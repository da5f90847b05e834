"""CR-MOGM (Zhou et al. 2022, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and Beyond")."""

from keras import ops

from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import WrappingMethod, inner_method
from keras_mtl.registry import register


def cr_mogm_weights(fresh, previous, steps, alpha=0.9):
    """One CR-MOGM step: ``lambda_t = alpha lambda_{t-1} + (1 - alpha) lambda_hat_t``.

    ``lambda_hat_t`` (``fresh``) are the weights the wrapped method computes
    on this step's Gramian; the first step (``steps == 0``) returns them as
    they are (TorchJD's ``CRMOGMWeighting`` without ``initial_weights``), so
    the first output does not depend on alpha. Not a function of the
    Gramian, hence its own signature: it smooths any weighting.

    Args:
        fresh: (K,) weights of the wrapped method at this step.
        previous: (K,) the smoothed weights of the previous step.
        steps: int, how many steps were smoothed before this one.
        alpha: in [0, 1]; 0 returns ``fresh``, 1 freezes the first weights.

    Returns:
        float32 (K,) smoothed weights.

    Examples:
        >>> import numpy as np
        >>> fresh, previous = np.array([0.2, 0.8]), np.array([0.6, 0.4])
        >>> np.round(np.asarray(cr_mogm_weights(fresh, previous, steps=5, alpha=0.9)), 4)  # 0.9·previous + 0.1·fresh
        array([0.56, 0.44], dtype=float32)
    """
    fresh = ops.cast(fresh, "float32")
    smoothed = alpha * ops.cast(previous, "float32") + (1.0 - alpha) * fresh
    return ops.where(ops.convert_to_tensor(steps) > 0, smoothed, fresh)


@register("cr_mogm")
class CRMOGM(WrappingMethod, GradientMethod):
    """CR-MOGM: another gradient method's task weights, smoothed by an exponential moving average.

    `λ_t = α λ_{t−1} + (1 − α) λ̂_t`, `λ̂_t` the weights of the wrapped
    `method` at step t (`λ_1 = λ̂_1`), the update being `Jᵀλ_t` (see
    `cr_mogm_weights`). Zhou et al. show that stochastic gradient
    manipulation (MGDA, PCGrad, CAGrad, …) may fail to converge to Pareto
    optimal solutions because its weights are determined by the
    instantaneous mini-batch gradients alone, and that exponentially
    averaging the past weights restores convergence. `alpha` is fixed, as
    in TorchJD's `CRMOGMWeighting` (default 0.9); the paper's Corollary 1
    lets `α_t` grow towards 1 as the learning rate decays, which a fixed
    `alpha` does not do. The smoothed weights are saved with the model.

    The wrapped method must define its update by task weights (any Gramian
    weighting: `"mgda"`, `"pcgrad"`, `"cagrad"`, …; not GradDrop or
    TrimmedMean, whose update is no weighting, nor a method that trains
    variables of its own).

    Zhou, Zhang, Jiang, Zhong, Gu & Zhu, "On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond", NeurIPS 2022.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        method: the wrapped gradient method whose weights are averaged, an id or a method instance, default
            `"mgda"`.
        alpha: α of the moving average, in [0, 1), default 0.9 (TorchJD's `CRMOGMWeighting`).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.CRMOGM({"a": "mse", "b": "mse"}, method="mgda", alpha=0.9)
    """

    def __init__(self, losses=None, method="mgda", alpha=0.9, name=None):
        super().__init__(losses, name=name)
        self.method = inner_method(method, losses, "CRMOGM", check=_check_weighting)
        self.losses = self.method.losses
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"CRMOGM alpha must be in [0, 1], got {alpha}.")
        self.alpha = alpha
        self.min_tasks = self.method.min_tasks

    @property
    def needs_losses_after(self):
        return self.method.needs_losses_after

    def build_state(self, state, task_names):
        super().build_state(state, task_names)
        state.variable("cr_mogm_weights", (len(task_names),))
        state.variable("cr_mogm_steps", (), dtype="int32")

    def gradient_weights(self, gradients, state, training):
        fresh, inner_state = self.method.gradient_weights(gradients, state, training)
        weights = cr_mogm_weights(fresh, state["cr_mogm_weights"], state["cr_mogm_steps"], self.alpha)
        if not training:
            return weights, {}
        return weights, {**inner_state, "cr_mogm_weights": weights, "cr_mogm_steps": state["cr_mogm_steps"] + 1}

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


def _check_weighting(method):
    """CR-MOGM averages task weights: the wrapped method's update must be ``J^T w``, its state untrained."""
    if not isinstance(method, GradientMethod):
        raise ValueError(f"CRMOGM wraps a gradient method; got {type(method).__name__}.")
    if isinstance(method, CRMOGM):
        raise ValueError("CRMOGM cannot wrap CRMOGM.")
    if type(method).combine is not GradientMethod.combine:
        raise ValueError(f"CRMOGM needs a method whose update is a task weighting; {type(method).__name__}'s is not.")
    if type(method).state_gradients is not GradientMethod.state_gradients:
        raise ValueError(f"CRMOGM cannot wrap {type(method).__name__}: it trains weights of its own from the update.")
