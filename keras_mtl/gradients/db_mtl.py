import keras

from keras_mtl.gradients._gramian import gradient_norms
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register

# The authors' guard, inside the log and in the norm ratio.
EPSILON = 1e-8


@register("db_mtl")
class DualBalancing(GradientMethod):
    """DB-MTL: log losses, and their gradients scaled to the largest one's norm.

    Loss-scale balancing: each task's gradient is that of `log(L_k + ε)`,
    `h_k = g_k / (L_k + ε)`. Gradient-magnitude balancing: every `h_k` is
    rescaled to the norm of the largest, `d = Σ_k (max_j ‖h_j‖ / (‖h_k‖ + ε))·h_k`,
    so every task moves the shared parameters equally far, at the pace of the
    one that would move them most. As weights on the task gradients:
    `w_k = max_j ‖h_j‖ / ((‖h_k‖ + ε)(L_k + ε))`, with `‖h_k‖ = sqrt(G_kk)/(L_k + ε)`
    from the Gramian. ε = 1e-8. A task whose gradient is 0 adds nothing to
    `d` (its weight is large, on a zero gradient); if every gradient is 0, so
    is `d`.

    Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, "Dual-Balancing for
    Multi-Task Learning", arXiv 2308.12029 (Neural Networks); the rule is that
    of LibMTL's `DB_MTL` (by the authors).

    Differences from the authors' code, which this class does not follow:

    - Their code smooths the log-loss gradients with an exponential moving
      average over steps, `ĝ_k ← β_t ĝ_k + (1 − β_t) h_k` (β = 0.9), and
      combines the `ĝ_k`. That is a K×P state, which a keras_mtl gradient
      method cannot hold yet (its state is created at `compile`, before the
      shared parameters are known); this class is their rule with β = 0, which
      only needs the Gramian, and so also works in representation mode (their
      code refuses it).
    - Their task heads get `∇ log L_k`; here, as for every gradient method,
      the heads get `∇ L_k`.

    The losses must be non-negative.

    Example:

    >>> keras_mtl.DualBalancing({"depth": "mae", "seg": "sparse_categorical_crossentropy"})
    """

    needs_non_negative_losses = True

    def gradient_weights(self, gradients, state, training):
        inverse_losses = 1.0 / (gradients.losses + EPSILON)
        log_loss_norms = gradient_norms(gradients.gramian) * inverse_losses
        scales = keras.ops.max(log_loss_norms) / (log_loss_norms + EPSILON)
        return scales * inverse_losses, {}
