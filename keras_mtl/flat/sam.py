"""SAM and F-MTL: sharpness-aware minimisation around any keras_mtl method (its step: the engines' `sam` modules)."""

from keras_mtl.arguments import Boolean, Choice, Method, Real, declare_arguments
from keras_mtl.flat.perturbation import sharpness_perturbation
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import MultiTaskLoss, WrappingMethod, inner_method
from keras_mtl.registry import register
from keras_mtl.training.steps.faults import gramian_check, perturbation_checks

VARIANTS = ("fmtl", "naive")


@register("sam")
@declare_arguments(
    method=Method(), rho=Real(minimum=0, minimum_open=True), adaptive=Boolean(), variant=Choice(VARIANTS)
)
class SAM(WrappingMethod, MultiTaskLoss):
    """Sharpness-aware minimisation around any loss weighting or gradient method.

    With a loss weighting (`method="ew"`, `"uw_so"`, …): plain SAM (Foret et
    al. 2021), or ASAM with `adaptive=True` (Kwon et al. 2021), on the
    weighted total loss `L`: from the clean gradient `g`, perturb the model's
    parameters by `ε = ρ·T²g / (‖T g‖ + 1e-12)` (`T = |θ|` elementwise when
    adaptive, else 1), take the gradient there, restore the parameters, and
    apply that gradient. The weighting's own variables take their clean
    gradient; its running statistics are updated once, by the clean pass.

    With a gradient method (`"pcgrad"`, `"mgda"`, `"mean"`, …): F-MTL (Phan et
    al. 2022). For every task i, perturb the shared parameters by
    `ε_sh = ρ·T²g_i / ‖T g_i‖` and task i's head by its own normalised
    `ε_i`, evaluate `L_i` there and take `g_i^SAM` and the head's SAM
    gradient. The shared update is `A({g_i}) + A({g_i^SAM − g_i})` for the
    chosen method A (`variant="fmtl"`), or `A({g_i^SAM})` for the ablation
    `variant="naive"`; heads take their own SAM gradient. About 2K backward
    passes per step. A stateful A (GradVac's targets, PCGrad's draws) steps
    twice per training step under `"fmtl"`.

    Perturbed passes run in training mode with exactly the randomness of the
    clean pass (dropout draws the same masks: every random seed is rewound),
    and leave no trace: they run in a `keras.StatelessScope`, so nothing is
    assigned, and parameters, batch-normalisation statistics and every other
    non-trainable variable keep the values the clean pass left, bit for bit.
    Representation mode is not supported (SAM perturbs parameters).

    Args:
        losses: the per-task losses.
        method: the loss weighting or gradient method, an id or an instance.
        rho: the neighbourhood radius ρ > 0; 0.05 for SAM (the F-MTL authors'
            scripts use ρ = 2 with `adaptive=True`).
        adaptive: ASAM's scale-invariant neighbourhood `T = |θ|`.
        variant: `"fmtl"` or `"naive"`, for gradient methods.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.SAM({"a": "mse", "b": "mse"}, method="pcgrad", rho=0.05)
    """

    def __init__(self, losses=None, method="ew", rho=0.05, adaptive=False, variant="fmtl", name=None):
        super().__init__(losses, name=name)
        if isinstance(method, SAM):
            raise ValueError("SAM cannot wrap SAM.")
        self.method = inner_method(method, losses, "SAM", check=_check_wrappable)
        self.losses = self.method.losses
        self.rho = rho
        self.adaptive = adaptive
        self.variant = variant
        self.min_tasks = self.method.min_tasks

    @property
    def is_gradient_method(self):
        return isinstance(self.method, GradientMethod)

    # SAM keeps no state of its own: every hook is its method's (`WrappingMethod`).

    train_step_kind = "sharpness_aware"

    @property
    def display_name(self):
        return f"SAM({self.method.display_name})"

    def weighting(self):
        return self.method.weighting()

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "adaptive": self.adaptive, "variant": self.variant}

    # What the engines' SAM steps ask of SAM, so that they read none of its options.

    def perturbation(self, gradients, parameters, variables):
        """(ε for one group of parameters, normalised over the group; the checks of ε, naming `variables`)."""
        deltas = sharpness_perturbation(gradients, parameters, self.rho, self.adaptive)
        return deltas, perturbation_checks(deltas, variables, self.rho)

    def combine_perturbed(self, clean, perturbed_jacobian, task_gradients, state):
        """F-MTL's shared direction from the clean task gradients and the (K, P) Jacobian at the perturbations.

        `task_gradients(jacobian)` makes a `TaskGradients` of a shared
        Jacobian. Returns (direction, weights, new state, checks of the
        Gramians combined): `A({g_i}) + A({g_i^SAM − g_i})`, the sharpness
        part continuing from the clean part's state, or `A({g_i^SAM})` for
        `variant="naive"`.
        """
        if self.variant == "naive":
            perturbed = task_gradients(perturbed_jacobian)
            direction, weights, new_state = self.method.combine(perturbed, state, training=True)
            return (
                direction,
                weights,
                new_state,
                [gramian_check(perturbed.gramian, "SAM's perturbed shared parameters")],
            )
        sharpness = task_gradients(perturbed_jacobian - clean.jacobian)
        checks = [
            gramian_check(
                sharpness.gramian, "SAM's perturbed shared parameters (their difference from the clean gradients)"
            )
        ]
        direction, weights, new_state = self.method.combine(clean, state, training=True)
        sharp_direction, _, sharp_state = self.method.combine(sharpness, {**state, **new_state}, training=True)
        return direction + sharp_direction, weights, {**new_state, **sharp_state}, checks


def _check_wrappable(method):
    """SAM perturbs the one-batch step of a loss weighting or a gradient method, not another kind's (a penalty's, a bilevel one's)."""
    if method.train_step_kind not in ("weighted_loss", "task_gradients"):
        raise ValueError(
            f"SAM cannot wrap {method.display_name}: it wraps loss weightings and gradient methods, and {method.display_name} trains with its own kind of step ({method.train_step_kind!r})."
        )
    if getattr(method, "batch_parts", 1) > 1:
        raise ValueError(
            f"SAM cannot wrap {method.display_name}: it draws {method.batch_parts} batches per step, and SAM's step takes one."
        )
