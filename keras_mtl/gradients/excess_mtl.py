import keras

from keras_mtl.arguments import Boolean, Integer, Real, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

# The authors' guard inside the square root of the accumulated squares.
EPSILON = 1e-7


@register("excess_mtl")
@declare_arguments(
    robust_step_size=Real(minimum=0, minimum_open=True), baseline_steps=Integer(minimum=1), simplex=Boolean()
)
class ExcessMTL(GradientMethod):
    """ExcessMTL: task weights raised by exponentiated gradient on each task's estimated excess risk.

    Every step, per task k and shared parameter p, the squared gradients are
    accumulated, `S_kp ← S_kp + g_kp²` (S starts at 0; the step's own square
    included), and the excess risk is estimated by a second-order Taylor
    term with that AdaGrad-style diagonal Hessian,
    `e_k = Σ_p g_kp² / √(S_kp + 1e-7)`. The first step's proxies are the
    baseline `e⁰` and leave the weights at their start; every later step
    sets `r_k = e_k / e⁰_k` and `λ_k ← λ_k · exp(η r_k)`, then rescales λ to
    sum to K (computed as `K · softmax(log λ + η r)`, the same numbers
    without overflow). The shared update is `d = Jᵀλ` with the step's new λ.
    A task whose proxy grows relative to its baseline (its loss is still
    far from its best) gains weight.

    He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task
    Learning with Excess Risks", ICML 2024 (arXiv 2402.02009; eqs. 6-7 the
    proxy, eq. 9 the update, as TorchJD's docstring cites them). The rule
    and the defaults are the authors' code (yifei-he/ExcessMTL,
    `LibMTL/weighting/ExcessMTL.py`, identical in LibMTL): λ starts at 1 and
    sums to K, η = `robust_step_size` = 1e-2, first-call baseline.

    Args:
        robust_step_size: η > 0 (authors: 1e-2; TorchJD: 1.0).
        baseline_steps: the baseline is the mean proxy of the first
            `baseline_steps` steps, during which the weights stay at their
            start (authors: 1; TorchJD's `n_warmup_steps=n` is n for n ≥ 1;
            the paper's Appendix C.1 recommends three epochs of steps).
        simplex: weights that start at 1/K and sum to 1 (TorchJD), instead
            of starting at 1 and summing to K (authors). Only the update's
            scale differs, by K.
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).

    Differences from the sources: the authors' total loss `Σ λ_k L_k` also
    weights each task's head by λ_k; here, as for every gradient method,
    the heads get their own unweighted gradient (the engine gives no head
    weights). TorchJD adds 1e-7 to the baseline in the ratio and, with no
    warm-up, updates the weights on the first call with the raw proxies;
    neither is done here. Degenerate inputs: a task whose baseline proxy
    is 0 (a zero gradient through the baseline steps) gets ratio 0, so its
    weight only falls behind; its zero gradient adds nothing to `d`.

    State: S (K×P, one column per shared parameter: parameter mode only,
    and a model whose shared parameters are known at compile, see
    `MultiTaskState.parameter_variable`), `e⁰` (K), λ (K) and a step count.
    Cost: K backward passes and O(K·P) per step.

    Examples:
        >>> keras_mtl.ExcessMTL({"depth": "mae", "seg": "sparse_categorical_crossentropy"}, robust_step_size=1e-2)
    """

    parameter_mode_only = True

    def __init__(self, losses=None, robust_step_size=1e-2, baseline_steps=1, simplex=False, name=None):
        super().__init__(losses, name=name)
        self.robust_step_size = robust_step_size
        self.baseline_steps = baseline_steps
        self.simplex = simplex

    def _weight_sum(self, num_tasks):
        return 1.0 if self.simplex else float(num_tasks)

    def build_state(self, state, task_names):
        k = len(task_names)
        state.parameter_variable("squared_gradient_sum", k)
        state.variable("baseline", (k,))
        state.variable("weights", (k,), initializer=keras.initializers.Constant(self._weight_sum(k) / k))
        state.variable("steps", ())

    def gradient_weights(self, gradients, state, training):
        squares = keras.ops.square(gradients.jacobian)
        squared_gradient_sum = state["squared_gradient_sum"] + squares
        proxies = keras.ops.sum(squares / keras.ops.sqrt(squared_gradient_sum + EPSILON), axis=1)
        steps = state["steps"] + 1.0
        in_baseline = steps <= self.baseline_steps
        baseline = keras.ops.where(
            in_baseline, state["baseline"] + (proxies - state["baseline"]) / steps, state["baseline"]
        )
        ratios = keras.ops.divide_no_nan(proxies, baseline)
        raised = self._weight_sum(squares.shape[0]) * keras.ops.softmax(
            keras.ops.log(state["weights"]) + self.robust_step_size * ratios
        )
        weights = keras.ops.where(in_baseline, state["weights"], raised)
        return weights, {
            "squared_gradient_sum": squared_gradient_sum,
            "baseline": baseline,
            "weights": weights,
            "steps": steps,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "robust_step_size": self.robust_step_size,
            "baseline_steps": self.baseline_steps,
            "simplex": self.simplex,
        }
