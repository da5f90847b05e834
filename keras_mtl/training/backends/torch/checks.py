"""A PyTorch step's checks: flags computed in the step, read once it has computed everything.

The same checks, in the same order and with the same messages, as the TensorFlow engine's
(`keras_mtl.training.backends.tensorflow.faults`); see the package docstring for what a failed one does.
"""

from dataclasses import dataclass, field

import keras
import torch
from keras import ops

from keras_mtl.training import tasks


CAUSES = "e.g. an inf input under a saturating activation such as tanh, or an overflow in the backward pass"


@dataclass
class Checks:
    """The step's checks, in the order it computes them: (ok flag, message, is a gradient overflow)."""

    loss_scaled: bool
    items: list = field(default_factory=list)

    def add(self, values, message, overflow=False):
        leaves = [torch.as_tensor(leaf) for leaf in keras.tree.flatten(values)]
        leaves = [leaf.detach() for leaf in leaves if leaf.is_floating_point()]
        ok = torch.stack([torch.isfinite(leaf).all() for leaf in leaves]).all() if leaves else ops.convert_to_tensor(True)
        self.items.append((ok, message, overflow))

    def bound(self, value, bound, message):
        self.items.append((ops.convert_to_tensor(value >= bound), message, False))

    def verdict(self):
        """(overflowed, fault index): an overflow only under a loss scale; the first fault after no overflow, else -1."""
        flags = torch.stack([ok.reshape(()) for ok, _, _ in self.items]).tolist() if self.items else []  # one device sync
        upstream_finite = True
        for i, (ok, (_, _, overflow)) in enumerate(zip(flags, self.items)):
            if overflow and self.loss_scaled:
                upstream_finite = upstream_finite and ok
            elif not ok and upstream_finite:
                return False, i
        return not upstream_finite, -1

    def messages(self):
        return [message for _, message, _ in self.items]


def check_losses(model, checks, losses, when="of the batch"):
    method = model.multi_task_method
    bounds = method.loss_lower_bounds(len(model.task_names))
    for k, name in enumerate(model.task_names):
        checks.add(losses[k], f"keras_mtl: the loss of task '{name}' ({when}) is not finite")
        if bounds is not None:
            checks.bound(losses[k], bounds[k], tasks.bound_message(method, name, bounds[k], when))


def check_state(method, checks, new_state):
    for key, value in new_state.items():
        checks.add(value, f"keras_mtl: {method.display_name}'s state '{key}' is not finite after this step")


def check_method(method, model, checks, weights, new_state, losses=None):
    check_state(method, checks, new_state)
    for k, name in enumerate(model.task_names):
        checks.add(weights[k], f"keras_mtl: {method.display_name} gave task '{name}' a non-finite weight")
        if losses is not None:
            checks.add(weights[k] * losses[k], f"keras_mtl: {method.display_name}: the weighted loss (weight × loss) of task '{name}' is not finite")


def check_variable_gradients(model, checks, gradients, variables, what="the gradient"):
    for gradient, variable in zip(gradients, variables):
        checks.add(gradient, f"keras_mtl: {what} of variable '{variable.path}' is not finite although every task's loss is finite ({CAUSES})", overflow=True)


def check_task_gradients(model, checks, jacobian, where):
    """One overflow check per row of a (K, P) Jacobian, naming the task; `where` says what it is the gradient of."""
    for k, name in enumerate(model.task_names):
        checks.add(jacobian[k], f"keras_mtl: the gradient of task '{name}' with respect to {where} is not finite although its loss is finite ({CAUSES})", overflow=True)


def check_gramian(checks, gramian, where):
    checks.add(gramian, f"keras_mtl: the Gramian of the task gradients with respect to {where} is not finite although every task's gradient is: a gradient norm above ~1.8e19 overflows float32", overflow=True)


def check_direction(method, checks, direction):
    checks.add(direction, f"keras_mtl: {method.display_name}'s combined direction is not finite although every task's gradient and weight is")


def check_perturbation(checks, sam, deltas, variables):
    for delta, variable in zip(deltas, variables):
        checks.add(delta, f"keras_mtl: SAM's perturbation of variable '{variable.path}' is not finite (rho={sam.rho})")
