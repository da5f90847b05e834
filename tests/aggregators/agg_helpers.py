"""Shared test data for tests/aggregators (a uniquely named module, not a conftest)."""

import functools

import numpy as np
import tensorflow as tf

SEED = tf.constant([3, 7], tf.int32)


def gramian(jacobian):
    jacobian = np.asarray(jacobian, np.float64)
    return tf.constant(jacobian @ jacobian.T, tf.float32)


@functools.lru_cache(maxsize=None)
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
