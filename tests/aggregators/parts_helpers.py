"""Shared helpers of the tests of the methods that draw several batches per step (MoDo, SDMGrad).

Backend-neutral: the method sees float32 part Jacobians as the engine passes them; the references
are numpy float64.
"""

import numpy as np
import pytest
from agg_helpers import numpy, task_gradients
from agg_inputs import INPUT_NAMES
from support.state_values import state_values


def project_simplex(v):
    """The Euclidean projection of v onto the probability simplex (Held, Wolfe & Crowder; Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    support = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[support] / (support + 1), 0.0)


def cross(first, second):
    """``A = J_1 J_2^T`` as the method gets it: a float32 product, then float64."""
    return (np.float32(first) @ np.float32(second).T).astype(np.float64)


def parts_gradients(parts):
    """``TaskGradients`` with the given part Jacobians (float32); the whole batch's Jacobian is their mean."""
    gradients = task_gradients(np.mean(parts, axis=0))
    gradients.part_jacobians = [np.asarray(part, np.float32) for part in parts]
    return gradients


def run_combine(method, steps):
    """Calls ``method.combine`` once per list of parts, threading the state as the engine does.

    Returns per step (direction, weights) as float64 numpy, and the final state values.
    """
    state = state_values(method, [f"t{k}" for k in range(len(steps[0][0]))])
    out = []
    for parts in steps:
        direction, weights, new_state = method.combine(parts_gradients(parts), state, training=True)
        assert set(new_state) <= set(state), sorted(set(new_state) - set(state))
        state = {**state, **new_state}
        out.append((numpy(direction).astype(np.float64), numpy(weights).astype(np.float64)))
    return out, {name: numpy(value).astype(np.float64) for name, value in state.items()}


def random_parts(rng, count, num_tasks=3, dim=5):
    """``count`` different (K, P) part Jacobians with a shared component (so that the tasks correlate)."""
    common = rng.normal(size=(num_tasks, dim))
    return [common + 0.7 * rng.normal(size=(num_tasks, dim)) for _ in range(count)]


# The property inputs of every shape cost a compilation each on JAX: the default run takes the
# hardest ones of a few shapes (norm ratios up to 1e6, scales 1e±10, rank-deficient), -m slow the rest.
FAST_INPUTS = ("conflicting_ratio_1e6", "scale_1e-10", "scale_1e10", "duplicates", "collinear_opposing", "zero_row")


def hard_inputs():
    return [name if name in FAST_INPUTS else pytest.param(name, marks=pytest.mark.slow) for name in INPUT_NAMES]
