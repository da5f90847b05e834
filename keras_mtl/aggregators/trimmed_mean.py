"""Coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed Learning"), as TorchJD defines it."""

from keras import ops

from keras_mtl.aggregators._common import kept_share
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


def check_trim_tasks(num_tasks, trim_number):
    """The trimmed mean drops ``2 t`` of the K values per coordinate: ``K >= 2 t + 1``."""
    if num_tasks < 2 * trim_number + 1:
        raise ValueError(
            f"TrimmedMean with trim_number={trim_number} needs at least {2 * trim_number + 1} tasks "
            f"(2 * trim_number + 1); got {num_tasks}."
        )


def trimmed_mean_update(jacobian, trim_number=1):
    """Coordinate-wise trimmed mean of the task gradients.

    TorchJD's ``TrimmedMean``: in every coordinate, drop the ``t`` largest
    and the ``t`` smallest of the K task components and average the
    ``K - 2 t`` left (Yin et al. 2018); ``t = 0`` is the plain mean. Up to
    t outlying components per coordinate cannot move the result beyond the
    range of the others. Coordinate-wise, so it needs J, not the Gramian.

    Args:
        jacobian: (K, P) per-task gradients, K static, ``K >= 2 t + 1``.
        trim_number: t >= 0.

    Returns:
        float32 (P,) update.

    Degenerate inputs: ties are harmless (equal values are interchangeable);
    a non-finite J gives a zero update. Plain float32 `keras.ops`, XLA-compatible.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, -2.0, 3.0], [2.0, 1.0, -1.0], [0.5, 0.0, 10.0]])
        >>> np.round(np.asarray(trimmed_mean_update(jacobian, trim_number=1)), 4)  # the median of each column
        array([1., 0., 3.], dtype=float32)
    """
    num = jacobian.shape[0]
    check_trim_tasks(num, trim_number)
    jacobian = ops.cast(jacobian, "float32")
    ok = ops.all(ops.isfinite(jacobian))
    jacobian = ops.where(ok, jacobian, ops.zeros_like(jacobian))
    ordered = ops.sort(jacobian, axis=0)
    return ops.mean(ordered[trim_number : num - trim_number], axis=0)


@register("trimmed_mean")
class TrimmedMean(GradientMethod):
    """Trimmed mean: per coordinate, the mean of the task gradients without the `t` largest and `t` smallest.

    Robust to up to `t = trim_number` outlying task gradients in each
    coordinate (see `trimmed_mean_update`); needs `K ≥ 2t + 1` tasks. The
    logged weight of task k is how much of `g_k` the update keeps along
    itself, `⟨d, g_k⟩ / ‖g_k‖²` (in representation mode under a distribution,
    from this replica's samples).

    Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018; the rule of
    TorchJD's `TrimmedMean`.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        trim_number: t, the largest and smallest values dropped per coordinate, ≥ 1 with K ≥ 2t + 1, default 1
            (TorchJD's).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.TrimmedMean({"a": "mse", "b": "mse", "c": "mse"}, trim_number=1)
    """

    def __init__(self, losses=None, trim_number=1, name=None):
        super().__init__(losses, name=name)
        if int(trim_number) != trim_number or trim_number < 0:
            raise ValueError(f"TrimmedMean trim_number must be an integer >= 0, got {trim_number}.")
        self.trim_number = int(trim_number)

    @property
    def min_tasks(self):
        return max(2 * self.trim_number + 1, 2)

    def check_num_tasks(self, num_tasks):
        super().check_num_tasks(num_tasks)
        check_trim_tasks(num_tasks, self.trim_number)

    def combine(self, gradients, state, training):
        direction = trimmed_mean_update(gradients.jacobian, self.trim_number)
        return direction, kept_share(gradients, direction), {}

    def get_config(self):
        return {**super().get_config(), "trim_number": self.trim_number}
