"""The JAX verdict on a step's checks (`keras_mtl.training.steps.faults`): flags in the compiled step.

A compiled JAX function cannot raise: each check becomes a flag, the step
keeps every value where one fails, and its index travels in the model's
state (`MultiTaskState.fault`); the messages are known when the step is
traced.
"""

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp


@dataclass
class Checks:
    """The step's checks, in the order it computes them: (ok flag, message, is a gradient overflow)."""

    loss_scaled: bool
    items: list = field(default_factory=list)

    def add(self, check):
        """Adds a `faults.Check`: its floating-point values are finite, and at least its `lower_bound`."""
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(check.value) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
        ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else jnp.array(True)
        if check.lower_bound is not None:
            ok = ok & jnp.all(jnp.asarray(check.value) >= check.lower_bound)
        self.items.append((ok, check.message, check.overflow))

    def extend(self, checks):
        for check in checks:
            self.add(check)

    def verdict(self):
        """(overflowed, fault index): an overflow only under a loss scale; the first fault after no overflow, else -1."""
        upstream_finite = jnp.array(True)
        index = jnp.array(-1, "int32")
        for i, (ok, _, overflow) in enumerate(self.items):
            if overflow and self.loss_scaled:
                upstream_finite = upstream_finite & ok
                continue
            failed = (~ok) & upstream_finite & (index < 0)
            index = jnp.where(failed, i, index)
        return ~upstream_finite, index

    def messages(self):
        return [message for _, message, _ in self.items]
