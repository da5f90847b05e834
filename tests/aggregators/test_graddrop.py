import numpy as np
import tensorflow as tf
from agg_helpers import SEED

from keras_mtl.aggregators import graddrop_update
from keras_mtl.aggregators._common import stateless_uniform


def test_hand_case():
    # Coordinate 0: +1 and -1 -> P = 1/2, keeps +1 if P > U else -1.
    # Coordinate 1: -2, -1 -> P = 0 < U: both negatives kept, -3.
    # Coordinate 2: 3, 2 -> P = 1 > U: both kept, 5.
    jac = tf.constant([[1.0, -2.0, 3.0], [-1.0, -1.0, 2.0]])
    uniform = stateless_uniform([3], SEED).numpy()
    first = 1.0 if 0.5 > uniform[0] else -1.0
    np.testing.assert_allclose(graddrop_update(jac, SEED).numpy(), [first, -3.0, 5.0])
    # leak = 1 passes the plain sum; leak = 1/2 is the halfway mix.
    np.testing.assert_allclose(graddrop_update(jac, SEED, leak=1.0).numpy(), [0.0, -3.0, 5.0])
    np.testing.assert_allclose(graddrop_update(jac, SEED, leak=0.5).numpy(), [first / 2, -3.0, 5.0])


def test_sign_consistency_and_reproducibility():
    rng = np.random.default_rng(0)
    for num in range(2, 9):
        jac = rng.normal(size=(num, 200)).astype(np.float32)
        update = graddrop_update(jac, SEED).numpy()
        positive = np.where(jac > 0, jac, 0).sum(0)
        negative = np.where(jac < 0, jac, 0).sum(0)
        # Every coordinate is all-from-positive or all-from-negative components.
        from_one_sign = np.isclose(update, positive, atol=1e-6) | np.isclose(update, negative, atol=1e-6)
        assert np.all(from_one_sign)
        assert np.any(update > 0) and np.any(update < 0)
        purity = 0.5 * (1 + jac.sum(0) / np.abs(jac).sum(0))
        uniform = stateless_uniform([200], SEED).numpy()
        np.testing.assert_allclose(update, np.where(purity > uniform, positive, negative), atol=1e-5)
        np.testing.assert_array_equal(update, graddrop_update(jac, SEED).numpy())
        assert not np.allclose(update, graddrop_update(jac, tf.constant([9, 9])).numpy())


def test_degenerate_inputs():
    np.testing.assert_array_equal(graddrop_update(tf.zeros((3, 4)), SEED).numpy(), np.zeros(4))
    same = tf.constant([[1.0, -2.0], [1.0, -2.0]])
    np.testing.assert_allclose(graddrop_update(same, SEED).numpy(), [2.0, -4.0])
    bad = tf.constant([[1.0, np.nan], [1.0, 2.0]])
    np.testing.assert_array_equal(graddrop_update(bad, SEED).numpy(), np.zeros(2))
