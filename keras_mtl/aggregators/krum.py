"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries"), as TorchJD defines them."""

from keras import ops

from keras_mtl.aggregators._common import diagonal, finite_or_zero, float64_function, prepare_gramian
from keras_mtl.arguments import Boolean, Integer, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


def check_krum_tasks(num_tasks, n_byzantine, n_selected):
    """Krum scores each gradient by its ``K - f - 2`` nearest others: ``K >= f + 3`` and ``K >= m``."""
    if num_tasks < n_byzantine + 3 or num_tasks < n_selected:
        raise ValueError(
            f"Krum with n_byzantine={n_byzantine}, n_selected={n_selected} needs at least "
            f"{max(n_byzantine + 3, n_selected)} tasks (n_byzantine + 3 and n_selected); got {num_tasks}."
        )


def _distances(gramian, squared):
    """Pairwise distances ``||g_i - g_j||`` (or their squares) from the Gramian, float64."""
    sq_norms = diagonal(gramian)
    # Rounding can make a distance between (nearly) equal gradients negative.
    sq_distances = ops.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * gramian, 0.0)
    return sq_distances if squared else ops.sqrt(sq_distances)


def _ranks(scores):
    """Each score's place in ascending order, ties to the lower index (float64, (K,)).

    Counted pairwise rather than by ``top_k``: PyTorch's ``topk`` does not
    order ties by index.
    """
    num = scores.shape[0]
    before = ops.arange(num)[None, :] < ops.arange(num)[:, None]
    ahead = (scores[None, :] < scores[:, None]) | ((scores[None, :] == scores[:, None]) & before)
    return ops.sum(ops.cast(ahead, "float64"), axis=1)


@float64_function
def krum_weights(gramian, n_byzantine=0, n_selected=1, squared=False):
    """Multi-Krum task weights: ``1/m`` on the m gradients with the least scores, 0 elsewhere.

    TorchJD's ``KrumWeighting``: with ``f = n_byzantine``, the score of
    gradient i is the sum of its distances to its ``K - f - 2`` nearest
    other gradients; the ``m = n_selected`` gradients of least score are
    averaged (``m = 1``: Krum, the update is one task's gradient). A
    gradient far from the others (an outlier, up to f of them) gets a large
    score and is never selected. TorchJD sums plain distances; Blanchard et
    al. sum squared ones (``squared=True``).

    The distances come from the Gramian, ``||g_i - g_j||^2 = G_ii + G_jj -
    2 G_ij`` in float64 (negative rounding clipped to 0), so two gradients
    closer than about ``2^-12 max(||g_i||, ||g_j||)`` (the float32 resolution
    of G) count as equal. Ties go to the lower task index.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static, ``K >= f + 3`` and
            ``K >= m``.
        n_byzantine: f >= 0, the number of gradients that may be adversarial.
        n_selected: m >= 1, how many gradients Multi-Krum averages.
        squared: score with squared distances (the paper) instead of plain
            ones (TorchJD, the default).

    Returns:
        float32 (K,) weights: m entries ``1/m``, the others 0.

    Degenerate inputs: zero, identical or collinear gradients are handled
    like any others (distances only); a non-finite G gives zero weights.
    A plain graph on TensorFlow, XLA on JAX.

    Examples:
        >>> import numpy as np
        >>> gramian = np.array([[1.0, 0.0, 0.9], [0.0, 1.0, 0.1], [0.9, 0.1, 1.0]])  # tasks 0 and 2 agree
        >>> np.round(np.asarray(krum_weights(gramian, n_byzantine=0, n_selected=1)), 4)
        array([1., 0., 0.], dtype=float32)
    """
    num = gramian.shape[0]
    check_krum_tasks(num, n_byzantine, n_selected)
    gramian, ok = prepare_gramian(gramian)
    distances = _distances(gramian, squared)
    others = ops.where(ops.eye(num) > 0, float("inf"), distances)
    nearest, _ = ops.top_k(-others, k=num - n_byzantine - 2)
    scores = -ops.sum(nearest, axis=1)
    weights = ops.cast(_ranks(scores) < n_selected, "float64") / n_selected
    return finite_or_zero(weights, ok)


@register("krum")
@declare_arguments(n_byzantine=Integer(minimum=0), n_selected=Integer(minimum=1), squared=Boolean())
class Krum(GradientMethod):
    """Krum / Multi-Krum: average the `m` task gradients closest to their neighbours.

    Each gradient is scored by the sum of its distances to its `K − f − 2`
    nearest other gradients (`f = n_byzantine`); the update is the mean of
    the `m = n_selected` gradients of least score (see `krum_weights`).
    Meant for robustness to up to `f` outlying (e.g. corrupted) tasks;
    needs `K ≥ f + 3` tasks.

    Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017; the
    rule of TorchJD's `Krum` (plain, not squared, distances by default).

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        n_byzantine: f, the number of outlying task gradients tolerated, ≥ 0, default 0 (TorchJD's).
        n_selected: m, the number of gradients averaged, default 1 (Krum; m > 1 is Multi-Krum).
        squared: score with squared distances (the paper's) instead of plain ones (TorchJD's), default False.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.Krum({"a": "mse", "b": "mse", "c": "mse", "d": "mse"}, n_byzantine=1)
    """

    def __init__(self, losses=None, n_byzantine=0, n_selected=1, squared=False, name=None):
        super().__init__(losses, name=name)
        self.n_byzantine = n_byzantine
        self.n_selected = n_selected
        self.squared = squared

    @property
    def min_tasks(self):
        return max(self.n_byzantine + 3, self.n_selected)

    def check_num_tasks(self, num_tasks):
        check_krum_tasks(num_tasks, self.n_byzantine, self.n_selected)

    def gradient_weights(self, gradients, state, training):
        return krum_weights(gradients.gramian, self.n_byzantine, self.n_selected, self.squared), {}

    def get_config(self):
        return {
            **super().get_config(),
            "n_byzantine": self.n_byzantine,
            "n_selected": self.n_selected,
            "squared": self.squared,
        }
