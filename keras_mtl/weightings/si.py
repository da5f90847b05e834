from keras_mtl.registry import register
from keras_mtl.weightings.scalarization import Scalarization
from keras_mtl.weightings.uncertainty import EPSILON


@register("si")
class ScaleInvariant(Scalarization):
    """SI: the scale-invariant scalarisation `total = Σ_k c_k log L_k`.

    Its gradient is that of the weights `w_k = c_k / (sg[L_k] + ε)` on the
    losses, so multiplying any task's loss by a constant changes neither the
    gradient nor the training: the baseline that isolates loss-scale balancing
    from everything else. ε = 1e-8 guards a loss of exactly 0 (the reference
    code has none: log 0 = −∞ there); the losses must be non-negative. With the
    default `c = 1` the weights are UW-O's (`uw_o`), the analytic optimum of
    uncertainty weighting, and DB-MTL's loss-scale half.

    As Navon et al., "Multi-Task Learning as a Bargaining Game" (Nash-MTL),
    ICML 2022, and Liu et al., "FAMO: Fast Adaptive Multitask Optimization",
    NeurIPS 2023, report it; the FAMO code's `ScaleInvariantLinearScalarization`
    is `Σ_k c_k log L_k` with `c` default 1.

    Args:
        losses: the per-task losses.
        weights: the `c_k`, one non-negative number per task, a dict
            `{task: c}` or a list in the model's output order; None means all 1.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.ScaleInvariant({"depth": "mae", "seg": "sparse_categorical_crossentropy"})
    """

    min_tasks = 2
    needs_non_negative_losses = True

    def weights(self, losses, state, training):
        coefficients, _ = super().weights(losses, state, training)
        return coefficients / (losses + EPSILON), {}
