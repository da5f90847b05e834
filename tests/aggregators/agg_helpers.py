"""Shared test data and helpers for tests/aggregators (a uniquely named module, not a conftest).

Backend-neutral: inputs are numpy arrays, results come back through ``keras.ops.convert_to_numpy``.
"""

import functools

import keras
import numpy as np
from support.state_values import state_values

import keras_mtl
from keras_mtl.aggregators._common import backend_function


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def order_keys(num, seed=0):
    """U(0, 1) keys (K, K) for the random orders of PCGrad / GradVac, as a method's stream would draw them."""
    return np.random.default_rng(seed).uniform(size=(num, num)).astype(np.float32)


def orders_of(keys):
    """The orders ``_common.random_orders`` must give: by increasing key, the task itself last (dropped)."""
    keys = np.array(keys, np.float64)
    np.fill_diagonal(keys, 2.0)
    return np.argsort(keys, axis=1, kind="stable")[:, :-1]


def gramian(jacobian):
    jacobian = np.asarray(jacobian, np.float64)
    return (jacobian @ jacobian.T).astype(np.float32)


def plain(fn):
    """A weighting without XLA on TensorFlow (a plain graph: much faster to build for every K); XLA on JAX.

    On JAX every weighting is compiled (inside ``jax.enable_x64``); the XLA path of TensorFlow is
    checked against this one in test_degenerate_and_compile.py.
    """
    return backend_function(getattr(fn, "python_function", fn), jit_compile=False)


def task_gradients(jacobian, losses=None):
    """``TaskGradients`` of a (K, P) Jacobian, as the engine passes them (float32)."""
    jacobian = np.asarray(jacobian, np.float32)
    g = gramian(jacobian)
    losses = np.ones(len(jacobian), np.float32) if losses is None else np.asarray(losses, np.float32)
    return keras_mtl.TaskGradients(jacobian=jacobian, losses=losses, gramian=g, last_layer_gramian=g)


def run_steps(method, jacobians, task_names=None):
    """Calls ``method.gradient_weights`` once per Jacobian, threading the state as the engine does.

    Returns the weights (numpy, one row per step) and the final state values. The returned state
    must only name declared entries.
    """
    names = task_names or [f"t{k}" for k in range(len(jacobians[0]))]
    state = state_values(method, names)
    out = []
    for jac in jacobians:
        weights, new_state = method.gradient_weights(task_gradients(jac), state, training=True)
        assert set(new_state) <= set(state), sorted(set(new_state) - set(state))
        state = {**state, **new_state}
        out.append(numpy(weights))
    return np.array(out), state


@functools.cache
def _random_jacobians():
    rng = np.random.default_rng(1234)
    out = []
    for num in range(2, 9):
        for shift in (0.0, 1.5):
            scales = rng.uniform(0.2, 3.0, size=(num, 1))
            out.append(rng.normal(size=(num, 12)) * scales + shift * rng.normal(size=12))
    return tuple(out)


def random_jacobians():
    """Seeded (K, 12) Jacobians, two for each K = 2..8; the second of each pair
    has a shared component, so some pairs conflict and some do not."""
    return [jac.copy() for jac in _random_jacobians()]


def pcgrad_reference(jac, orders):
    """Plain P-space PCGrad in numpy with the given orders: the projected gradients (K, P)."""
    projected = []
    for i, order in enumerate(orders):
        v = np.array(jac[i], np.float64)
        for j in order:
            dot = v @ jac[j]
            if dot < 0:
                v -= dot / (jac[j] @ jac[j]) * jac[j]
        projected.append(v)
    return np.array(projected)
