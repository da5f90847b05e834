"""SDMGrad (Xiao, Ban & Ji 2023, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms")."""

from keras import ops

from keras_mtl.aggregators._common import (
    as_float64,
    clip_update_norm,
    diagonal,
    finite_or_zero,
    matvec,
    prepare_gramian,
    safe_sqrt,
    xla_compiled,
)
from keras_mtl.aggregators._cross import cross_matrix, prepare_cross, project_simplex
from keras_mtl.arguments import Boolean, Integer, Real, declare_arguments
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


def normalized_cross(cross):
    """``A / s^2`` with ``s = mean_k sqrt(max(A_kk, 0))``; 0 when s = 0.

    The normalisation of the authors' code and LibMTL (TorchJD: "section
    6.1 of the paper"), which makes the inner learning rate independent of
    the gradients' scale. A cross-batch A can have a negative diagonal,
    hence the max (LibMTL, TorchJD; the authors' ``sqrt(A_kk + 1e-4)`` is
    NaN there). The sources guard the division with constants (1e-4 inside
    the root in the authors' code, 1e-8 added to s^2 in LibMTL and TorchJD)
    that undo the normalisation for small gradients (norms below ~1e-2 and
    ~1e-4): here only s = 0 is special (every task's two gradients
    disagree or vanish): A becomes 0 and w stays where it was.
    """
    scale = ops.mean(safe_sqrt(diagonal(cross)))
    return ops.divide_no_nan(cross, scale**2)


@xla_compiled
def sdmgrad_weights(
    cross, update_gramian, weights, lambda_=0.3, n_iter=20, lr=10.0, momentum=0.5, scale_by_tasks=False, max_norm=None
):
    """SDMGrad's inner solve of w and the update's task weights.

    With ``A = J_ξ J_ξ'^T`` the cross product of two independent batches'
    Jacobians, normalised (``normalized_cross``), ``w~ = 1/K`` (the mean
    direction's weights) and w warm-started from ``weights``: ``n_iter``
    steps of SGD with momentum on the simplex (velocity from 0 each call),

        ``v ← μ v + A (w + λ w~)``,  ``w ← Π_Δ(w − lr v)``,

    the stochastic gradient of ``½ ||J^T (w + λ w~)||^2`` (the authors'
    ``SDMGrad.sdmgrad``, LibMTL and TorchJD alike). The update weights are
    ``u = (w + λ w~) / (1 + λ)``, times K if ``scale_by_tasks``, scaled down
    so that ``||J_ζ^T u|| <= max_norm`` if set (``update_gramian`` is
    ``J_ζ J_ζ^T``).

    Args:
        cross: (K, K) ``A = J_ξ J_ξ'^T``.
        update_gramian: (K, K) ``J_ζ J_ζ^T``, for ``max_norm``.
        weights: (K,) w from the previous step, on the simplex.
        lambda_: λ >= 0, the pull towards the mean direction.
        n_iter: the inner steps, >= 1.
        lr: the inner learning rate, > 0.
        momentum: the inner momentum μ in [0, 1).
        scale_by_tasks: multiply u by K (the authors' code: "to match the
            sum loss").
        max_norm: None, or the largest ``||d||`` (the authors' code: 1.0).

    Returns:
        float32 ``(u, new w)``. In float64, XLA-compiled on every backend.
        A non-finite A or Gramian gives zero update weights and leaves w.

    Examples:
        >>> import numpy as np
        >>> jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> gramian = jacobian @ jacobian.T  # [[1, -1], [-1, 2]]
        >>> update, w = sdmgrad_weights(gramian, gramian, np.array([0.5, 0.5]), lambda_=0.3)
        >>> np.round(np.asarray(update), 4)  # (w + 0.3/2) / 1.3
        array([0.1154, 0.8846], dtype=float32)
        >>> np.round(np.asarray(w), 4)
        array([0., 1.], dtype=float32)
    """
    cross, ok = prepare_cross(cross)
    update_gramian, gramian_ok = prepare_gramian(update_gramian)
    ok = ok & gramian_ok
    scaled = normalized_cross(cross)
    start = as_float64(weights)
    preference = ops.full_like(start, 1.0 / start.shape[0])

    def inner_step(_, carry):
        w, velocity = carry
        velocity = momentum * velocity + matvec(scaled, w + lambda_ * preference)
        return project_simplex(w - lr * velocity), velocity

    solved, _ = ops.fori_loop(0, n_iter, inner_step, (start, ops.zeros_like(start)))
    update = (solved + lambda_ * preference) / (1.0 + lambda_) * (start.shape[0] if scale_by_tasks else 1.0)
    update = clip_update_norm(update_gramian, update, max_norm)
    return finite_or_zero(update, ok), ops.cast(ops.where(ok, solved, start), "float32")


@register("sdmgrad")
@declare_arguments(
    lambda_=Real(minimum=0),
    n_iter=Integer(minimum=1),
    lr=Real(minimum=0, minimum_open=True),
    momentum=Real(minimum=0, maximum=1, maximum_open=True),
    scale_by_tasks=Boolean(),
    max_norm=Real(minimum=0, minimum_open=True, optional=True),
)
class SDMGrad(GradientMethod):
    """SDMGrad: a stochastic MGDA steered towards the mean direction, on three batches per step.

    Each step draws three independent batches ξ, ξ′, ζ by dealing the
    batch `fit` gives it into three interleaved parts (``fit`` shuffles, so
    they are independent batches of the training set): SDMGrad with
    ``batch_size=96`` uses three batches of 32. With their Jacobians:

    - w ← ``n_iter`` steps of SGD with momentum on the simplex for
      ``min_w ½ ||J^T (w + λ w~)||^2``, the gradient estimated from
      ``A = J_ξ J_ξ'^T`` normalised by its diagonal (see
      `sdmgrad_weights`); w is kept across steps (warm start), saved with
      the model, and 1/K at the start;
    - ``d = J_ζ^T (w + λ w~) / (1 + λ)``, ``w~ = 1/K``: λ = 0 is stochastic
      MGDA, λ → ∞ the mean of the task gradients.

    Parts 1 and 2 are ξ and ξ′, part 3 is ζ (the sources take ζ first; the
    parts are exchangeable). Heads get their task's gradient on the whole
    batch (for losses averaged over samples, the mean of the parts'). The
    logged weights are the update's, ``(w + λ w~)/(1 + λ)`` (times K and
    clipped when asked). SDMGrad needs the shared parameters' Jacobians (no
    ``representation`` mode). A step costs one forward and K backward
    passes on the whole batch (losses, logs, heads) and one forward and K
    backward passes on each part.

    Degenerate inputs: with the default inner lr = 10 on the normalised A,
    w often ends on a vertex or an edge of the simplex; an A with no
    positive diagonal entry (every task's two gradients disagree) leaves w
    where it was; a non-finite A gives zero weights and leaves w (the
    engine reports the overflow first).

    The authors' code (OptMN-Lab/sdmgrad, ``methods/weight_methods.py``)
    fills the three batches' gradients into one buffer (a list of the same
    tensor three times), so there all three are the last batch's and A is a
    one-batch Gramian; here they are three batches, as the paper, LibMTL
    and TorchJD have it.

    Defaults: λ = 0.3 (the authors' experiments' ``run.sh``, LibMTL and
    TorchJD; the authors' class default is 0.6), ``n_iter`` = 20 and
    momentum 0.5 (all sources), inner ``lr`` = 10 (the authors' code and
    TorchJD; LibMTL uses 5). The authors' code also multiplies the shared
    update by K and clips its norm to 1.0; LibMTL and TorchJD do neither,
    nor do the defaults here (``scale_by_tasks=True, max_norm=1.0``
    reproduces it, as FairGrad's ``max_norm`` does for the same group's
    code). Every batch must hold at least 3 samples (an error names the
    method otherwise).

    Rounding: LibMTL, given the same batches and inner lr, follows the same
    rule yet ends up to ~1e-2 away in w at K = 8 after 20 steps. The inner
    steps do not contract (lr times the largest eigenvalue of the
    normalised A, up to about K·lr, is far above 2), so rounding grows from
    step to step: LibMTL's float32 and its 1e-8 added to s², or keeping w
    in float32 rather than float64 between steps, each move w by that much.
    Here the solve is float64 and w is stored in float32; the tests check
    each step against the float64 rule from the same w (on TensorFlow to
    1e-8; on JAX a step is up to ~5e-4 off, an open issue).

    Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple
    and Provable Stochastic Algorithms", NeurIPS 2023 (arXiv 2305.18409).

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        lambda_: λ ≥ 0, the pull towards the mean direction, default 0.3 (the authors' experiments, LibMTL,
            TorchJD).
        n_iter: inner SGD steps on the simplex per training step, default 20 (all sources).
        lr: the inner learning rate, default 10.0 (the authors' code and TorchJD; LibMTL 5).
        momentum: the inner momentum, default 0.5 (all sources).
        scale_by_tasks: multiply the shared update by K as the authors' code does, default False (LibMTL,
            TorchJD).
        max_norm: cap on `‖d‖` (the authors' code: 1.0), default None (no cap).
        name: the method's name, default None (its registered id).

    Examples:
        >>> method = keras_mtl.SDMGrad({"a": "mse", "b": "mse"}, lambda_=0.3)
        >>> # model.compile(optimizer, loss=method); model.fit(x, y, batch_size=96)  # three batches of 32 per step
    """

    batch_parts = 3

    def __init__(
        self, losses=None, lambda_=0.3, n_iter=20, lr=10.0, momentum=0.5, scale_by_tasks=False, max_norm=None, name=None
    ):
        super().__init__(losses, name=name)
        self.lambda_ = lambda_
        self.n_iter = n_iter
        self.lr = lr
        self.momentum = momentum
        self.scale_by_tasks = scale_by_tasks
        self.max_norm = max_norm

    def build_state(self, state, task_names):
        state.variable(
            "sdmgrad_weights",
            (len(task_names),),
            initializer=lambda shape, dtype: ops.full(shape, 1.0 / shape[0], dtype),
        )

    def combine(self, gradients, state, training):
        xi, xi_prime, zeta = gradients.part_jacobians
        weights, solved = sdmgrad_weights(
            cross_matrix(xi, xi_prime),
            cross_matrix(zeta, zeta),
            state["sdmgrad_weights"],
            self.lambda_,
            self.n_iter,
            self.lr,
            self.momentum,
            self.scale_by_tasks,
            self.max_norm,
        )
        return ops.matmul(weights, zeta), weights, {"sdmgrad_weights": solved} if training else {}

    def get_config(self):
        return {
            **super().get_config(),
            "lambda_": self.lambda_,
            "n_iter": self.n_iter,
            "lr": self.lr,
            "momentum": self.momentum,
            "scale_by_tasks": self.scale_by_tasks,
            "max_norm": self.max_norm,
        }
