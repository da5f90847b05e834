"""ConFIG (Liu, Chu & Thuerey 2024, "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks")."""

from keras import ops

from keras_mtl.aggregators._common import (
    as_float64,
    finite_or_zero,
    float64_function,
    jacobi_scale,
    matvec,
    null_tolerance,
    prepare_gramian,
    pseudo_solve,
)
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


@float64_function
def config_weights(gramian, preferences=None):
    """ConFIG task weights: the direction with equal cosines to every gradient, with projection length.

    The paper's Eq. 2 (and the authors' ``ConFIG_update`` with its defaults
    ``EqualWeight`` and ``ProjectionLength``): with the unit gradients
    ``U = D^-1 J`` (``D = diag ||g_k||``, a zero gradient's row kept 0) and
    the preference vector ``p`` (all ones by default),
    ``x = U^+ p``, ``g_hat = x / ||x||``, and the update
    ``d = (sum_k g_k . g_hat) g_hat``: its cosine with ``g_k`` is
    proportional to ``p_k`` (equal and positive by default: conflict-free),
    and its length is the sum of the gradients' projections on it.

    From the Gramian alone: ``U U^T = C`` is the cosine matrix, so
    ``x = U^T C^+ p = J^T v`` with ``v = D^-1 b``, ``b = C^+ p``; then
    ``||x||^2 = b^T C b`` and ``sum_k g_k . x = sum_k ||g_k|| (C b)_k``,
    hence ``w = (sum_k ||g_k|| (C b)_k / b^T C b) v``. C has a unit
    diagonal whatever the gradients' sizes, so the solve does not depend on
    them; it is in float64, eigenvalues of C ``<= K 2^-23`` (the float32
    resolution of G) dropped. The authors solve ``U x = p`` by
    ``torch.linalg.lstsq`` (default) or ``pinv`` (TorchJD): both the
    minimum-norm least-squares solution computed here.

    Args:
        gramian: (K, K) Gramian ``J J^T``, K static.
        preferences: (K,) positive ``p``, the cosines' proportions (the
            paper's weight vector, open in the paper); None for equal.

    Returns:
        float32 (K,) weights.

    Degenerate inputs: when the unit gradients are linearly dependent
    (rank-deficient C) there is in general no direction with the asked
    cosines; ``C^+`` gives the least-squares one, whose cosines are
    proportional to the projection of p onto the range of C (identical
    gradients: ``w = 1``, ``d`` the sum). A zero gradient is ignored (its
    preference too). If ``b^T C b = 0`` (p orthogonal to the range of C, e.g.
    opposing collinear gradients, all-zero G) and for a non-finite G the
    weights are 0. A plain graph on TensorFlow, XLA on JAX.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> weights = config_weights(gramian)
        >>> np.round(np.asarray(weights), 4)
        array([1.2071, 0.8536], dtype=float32)
        >>> np.round(np.asarray(weights) @ jacobian, 4)  # the update d = Jᵀw
        array([0.3536, 0.8536])
    """
    gramian, ok = prepare_gramian(gramian)
    num = gramian.shape[0]
    cosines, inverse_norms = jacobi_scale(gramian)
    if preferences is None:
        preferences = ops.ones((num,), "float64")
    preferences = as_float64(preferences) * ops.cast(inverse_norms > 0, "float64")
    coefficients = pseudo_solve(cosines, preferences, null_tolerance(num))
    along = matvec(cosines, coefficients)  # cosines of x with each g_k, times ||x||
    norms = ops.divide_no_nan(ops.ones_like(inverse_norms), inverse_norms)
    length = ops.divide_no_nan(ops.sum(norms * along), ops.sum(coefficients * along))
    return finite_or_zero(length * coefficients * inverse_norms, ok)


@register("config")
class ConFIG(GradientMethod):
    """ConFIG: the update with equal positive cosines to every task gradient.

    `d = (Σ_k g_k·ĝ) ĝ` with `ĝ = x/‖x‖` and `x = U⁺p`, `U` the unit task
    gradients (rows `g_k/‖g_k‖`), `p` the preferences (all ones by
    default): every `g_k` makes the same angle (< 90°) with `d`, and `d`'s
    length is the sum of the gradients' projections on it (see
    `config_weights`). The authors' other length models and the momentum
    variant M-ConFIG are not included.

    Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025 (arXiv 2408.11104), Eq. 2.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        preferences: the positive proportions `p` of the cosines, a dict `{task: p_k}`, default None (all
            equal, the paper's Eq. 2).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.ConFIG({"a": "mse", "b": "mse"}, preferences={"a": 2.0, "b": 1.0})
    """

    def __init__(self, losses=None, preferences=None, name=None):
        super().__init__(losses, name=name)
        if preferences is not None:
            preferences = {str(task): float(value) for task, value in dict(preferences).items()}
            bad = {task: value for task, value in preferences.items() if not 0 < value < float("inf")}
            if bad:
                raise ValueError(f"ConFIG preferences must be positive and finite; got {bad}.")
        self.preferences = preferences
        self._preference_vector = None

    def build_state(self, state, task_names):
        if self.preferences is None:
            return
        missing = sorted(set(task_names) - set(self.preferences))
        unknown = sorted(set(self.preferences) - set(task_names))
        if missing or unknown:
            raise ValueError(
                f"ConFIG preferences must name every task {sorted(task_names)} once: "
                f"missing {missing}, unknown {unknown}."
            )
        self._preference_vector = [self.preferences[task] for task in task_names]

    def gradient_weights(self, gradients, state, training):
        return config_weights(gradients.gramian, self._preference_vector), {}

    def get_config(self):
        return {**super().get_config(), "preferences": self.preferences}
