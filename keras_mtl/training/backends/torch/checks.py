"""The PyTorch verdict on a step's checks (`keras_mtl.training.steps.faults`): flags read once the step has computed everything.

The step is eager, so a failed check raises right after the step, before
anything is assigned; the flags stay on the device until the verdict reads
them all at once.
"""

from dataclasses import dataclass, field

import keras
import torch
from keras import ops


@dataclass
class Checks:
    """The step's checks, in the order it computes them: (ok flag, message, is a gradient overflow)."""

    loss_scaled: bool
    items: list = field(default_factory=list)

    def add(self, check):
        """Adds a `faults.Check`: its floating-point values are finite, and at least its `lower_bound`."""
        leaves = [ops.convert_to_tensor(leaf).detach() for leaf in keras.tree.flatten(check.value)]
        leaves = [leaf for leaf in leaves if leaf.is_floating_point()]
        ok = (
            torch.stack([torch.isfinite(leaf).all() for leaf in leaves]).all()
            if leaves
            else ops.convert_to_tensor(True)
        )
        if check.lower_bound is not None:
            ok = ok & (ops.convert_to_tensor(check.value).detach() >= check.lower_bound).all()
        self.items.append((ok, check.message, check.overflow))

    def extend(self, checks):
        for check in checks:
            self.add(check)

    def verdict(self):
        """(overflowed, fault index), Python values: an overflow only under a loss scale; the first fault after no overflow, else -1."""
        flags = (
            torch.stack([ok.reshape(()) for ok, _, _ in self.items]).tolist() if self.items else []
        )  # one device sync
        upstream_finite = True
        for i, (ok, (_, _, overflow)) in enumerate(zip(flags, self.items)):
            if overflow and self.loss_scaled:
                upstream_finite = upstream_finite and ok
            elif not ok and upstream_finite:
                return False, i
        return not upstream_finite, -1

    def messages(self):
        return [message for _, message, _ in self.items]
