"""Auxiliary-task weightings: one main task, the others help it or are ignored."""

import keras
import numpy as np

from keras_mtl.arguments import Boolean, Real, Text, declare_arguments
from keras_mtl.gradients._gramian import gradient_norms
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.registry import register


def main_task_index(method, task_names):
    """The index of `method.main_task` among the tasks, or an error naming the method and the tasks."""
    if method.main_task is None:
        raise ValueError(f"{type(method).__name__} needs `main_task`, one of the tasks {list(task_names)}.")
    if method.main_task not in task_names:
        raise ValueError(f"main_task {method.main_task!r} is not one of the tasks {list(task_names)}.")
    return list(task_names).index(method.main_task)


@declare_arguments(main_task=Text(optional=True, what="the name of one task"))
class _AuxiliaryMethod(GradientMethod):
    """A gradient method with one main task; the main task's weight is 1."""

    def __init__(self, losses=None, main_task=None, name=None):
        super().__init__(losses, name=name)
        self.main_task = main_task

    def build_state(self, state, task_names):
        self._main = main_task_index(self, task_names)
        self._is_main = np.eye(len(task_names), dtype="float32")[self._main]

    def _with_main_weight(self, auxiliary_weights):
        """`auxiliary_weights` (K,) with the main task's entry set to 1."""
        is_main = keras.ops.convert_to_tensor(self._is_main, auxiliary_weights.dtype)
        return is_main + (1.0 - is_main) * auxiliary_weights

    def get_config(self):
        return {**super().get_config(), "main_task": self.main_task}


@register("hydalearn")
@declare_arguments(step_size=Real(minimum=0, minimum_open=True, optional=True), first_order=Boolean())
class HydaLearn(_AuxiliaryMethod):
    """HydaLearn: weigh each auxiliary task by its look-ahead gain on the main task.

    Per batch, for every task k, `δ_k = L_m(θ) − L_m(θ − η g_k)`: how much a
    step of size η on task k's gradient alone lowers the main task's loss
    (the step moves the shared parameters; the task's own head does not
    affect `L_m`). `w_m = 1`, `w_k = max(δ_k, 0) / δ_m` for the auxiliaries;
    when the main task's own step does not lower its loss (`δ_m ≤ 0`) the
    auxiliaries get 0. With `first_order=True`, `δ_k ≈ η⟨g_m, g_k⟩` from the
    Gramian, with no extra forward pass.

    The exact look-ahead costs one forward pass per task at the moved
    parameters (in training mode with the clean pass's randomness; it leaves
    no trace on the model).

    Verboven et al., "HydaLearn: Highly Dynamic Task Weighting for
    Multi-task Learning with Auxiliary Tasks", 2020. The paper leaves open
    the step size and the exact or linearised gain; here they are
    `step_size` (None: the optimizer's learning rate, as in the paper's
    description) and `first_order`.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        main_task: the name of the main task (required); the others are auxiliary.
        step_size: η of the look-ahead step, default None (the optimizer's learning rate, as the paper
            describes).
        first_order: use the linearised gain `η⟨g_m, g_k⟩` from the Gramian instead of the look-ahead passes,
            default False.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.HydaLearn({"main": "mse", "aux": "mse"}, main_task="main")
    """

    def __init__(self, losses=None, main_task=None, step_size=None, first_order=False, name=None):
        super().__init__(losses, main_task=main_task, name=name)
        self.step_size = step_size
        self.first_order = first_order

    @property
    def needs_losses_after(self):
        return not self.first_order

    def gradient_weights(self, gradients, state, training):
        eta = keras.ops.cast(
            gradients.learning_rate if self.step_size is None else self.step_size, gradients.jacobian.dtype
        )
        if self.first_order:
            gains = eta * gradients.gramian[self._main]
        else:
            if gradients.losses_after is None:
                raise ValueError(
                    "HydaLearn's exact look-ahead moves parameters: use parameter mode, inside SAM too, or first_order=True."
                )
            main_loss = gradients.losses[self._main]
            num_tasks = gradients.jacobian.shape[0]
            gains = keras.ops.stack(
                [main_loss - gradients.losses_after(eta * gradients.jacobian[k])[self._main] for k in range(num_tasks)]
            )
        main_gain = keras.ops.maximum(gains[self._main], 0.0)
        return self._with_main_weight(keras.ops.divide_no_nan(keras.ops.maximum(gains, 0.0), main_gain)), {}

    def get_config(self):
        return {**super().get_config(), "step_size": self.step_size, "first_order": self.first_order}


@register("gcossim")
@declare_arguments(weighted=Boolean())
class GradientCosineSimilarity(_AuxiliaryMethod):
    """GCosSim: use an auxiliary gradient only where it agrees with the main task's.

    `cos_k = ⟨g_m, g_k⟩ / (‖g_m‖‖g_k‖)` from the Gramian; `w_m = 1` and, for
    the auxiliaries, `w_k = 1` if `cos_k > 0` else 0 (`weighted=False`), or
    `w_k = max(cos_k, 0)` (`weighted=True`). A zero gradient counts as
    cosine 0. A cheap relative of HydaLearn.

    Du et al., "Adapting Auxiliary Losses Using Gradient Similarity", 2018.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        main_task: the name of the main task (required); the others are auxiliary.
        weighted: weigh an auxiliary by `max(cos_k, 0)` instead of 1 or 0, default False (the paper's hard
            rule).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.GradientCosineSimilarity({"main": "mse", "aux": "mse"}, main_task="main")
    """

    def __init__(self, losses=None, main_task=None, weighted=False, name=None):
        super().__init__(losses, main_task=main_task, name=name)
        self.weighted = weighted

    def gradient_weights(self, gradients, state, training):
        norms = gradient_norms(gradients.gramian)
        cosines = keras.ops.divide_no_nan(gradients.gramian[self._main], norms[self._main] * norms)
        auxiliary = keras.ops.maximum(cosines, 0.0) if self.weighted else keras.ops.cast(cosines > 0, cosines.dtype)
        return self._with_main_weight(auxiliary), {}

    def get_config(self):
        return {**super().get_config(), "weighted": self.weighted}
