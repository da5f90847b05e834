import numpy as np
from agg_helpers import numpy, task_gradients
from support.state_values import state_values

import keras_mtl
from keras_mtl.aggregators import graddrop_update


def _uniform(size, seed=0):
    return np.random.default_rng(seed).uniform(size=size).astype(np.float32)


def _reference(jac, uniform):
    """The definition coordinate by coordinate: the positive components where P > U, else the negative ones."""
    purity = 0.5 * (1 + jac.sum(0) / np.abs(jac).sum(0))
    positive, negative = np.where(jac > 0, jac, 0).sum(0), np.where(jac < 0, jac, 0).sum(0)
    return np.where(purity > uniform, positive, negative)


def test_hand_case():
    # Coordinate 0: +1 and -1 -> P = 1/2, keeps +1 since P > U = 0.3.
    # Coordinate 1: -2, -1 -> P = 0 < U: both negatives kept, -3.
    # Coordinate 2: 3, 2 -> P = 1 > U: both kept, 5.
    jac = np.float32([[1.0, -2.0, 3.0], [-1.0, -1.0, 2.0]])
    uniform = np.float32([0.3, 0.5, 0.5])
    np.testing.assert_allclose(numpy(graddrop_update(jac, uniform)), [1.0, -3.0, 5.0])
    np.testing.assert_allclose(numpy(graddrop_update(jac, np.float32([0.7, 0.5, 0.5]))), [-1.0, -3.0, 5.0])
    # leak = 1 passes the plain sum; leak = 1/2 is the halfway mix.
    np.testing.assert_allclose(numpy(graddrop_update(jac, uniform, leak=1.0)), [0.0, -3.0, 5.0])
    np.testing.assert_allclose(numpy(graddrop_update(jac, uniform, leak=0.5)), [0.5, -3.0, 5.0])


def test_sign_consistency():
    rng = np.random.default_rng(0)
    for num in range(2, 9):
        jac = rng.normal(size=(num, 200)).astype(np.float32)
        uniform = _uniform(200, num)
        update = numpy(graddrop_update(jac, uniform))
        positive = np.where(jac > 0, jac, 0).sum(0)
        negative = np.where(jac < 0, jac, 0).sum(0)
        # Every coordinate is all-from-positive or all-from-negative components.
        from_one_sign = np.isclose(update, positive, atol=1e-6) | np.isclose(update, negative, atol=1e-6)
        assert np.all(from_one_sign)
        assert np.any(update > 0) and np.any(update < 0)
        np.testing.assert_allclose(update, _reference(jac, uniform), atol=1e-5)


def test_degenerate_inputs():
    uniform = _uniform(4)
    np.testing.assert_array_equal(numpy(graddrop_update(np.zeros((3, 4), np.float32), uniform)), np.zeros(4))
    same = np.float32([[1.0, -2.0], [1.0, -2.0]])
    np.testing.assert_allclose(numpy(graddrop_update(same, uniform[:2])), [2.0, -4.0])
    bad = np.float32([[1.0, np.nan], [1.0, 2.0]])
    np.testing.assert_array_equal(numpy(graddrop_update(bad, uniform[:2])), np.zeros(2))


def test_method_draws_per_step_reproducibly_and_logs_the_kept_share():
    # The method's draws follow its random stream: the same seed repeats them, the stream moves on
    # each step, and every step's update is GradDrop's for some U (the masks P > U it implies).
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(3, 300)).astype(np.float32)
    gradients = task_gradients(jac)

    def steps(method, count):
        state, out = state_values(method, ["a", "b", "c"]), []
        for _ in range(count):
            direction, logged, new_state = method.combine(gradients, state, training=True)
            assert set(new_state) == {"rng"}
            state = {**state, **new_state}
            out.append((numpy(direction), numpy(logged)))
        return out

    first, again = steps(keras_mtl.GradDrop(seed=5), 2), steps(keras_mtl.GradDrop(seed=5), 2)
    positive, negative = np.where(jac > 0, jac, 0).sum(0), np.where(jac < 0, jac, 0).sum(0)
    for (direction, logged), (repeated, _) in zip(first, again):
        np.testing.assert_array_equal(direction, repeated)
        assert np.all(np.isclose(direction, positive, atol=1e-5) | np.isclose(direction, negative, atol=1e-5))
        np.testing.assert_allclose(logged, jac @ direction / np.sum(jac**2, 1), rtol=1e-4)
    assert not np.array_equal(first[0][0], first[1][0])
    evaluated = keras_mtl.GradDrop(seed=5)
    _, _, unchanged = evaluated.combine(gradients, state_values(evaluated, "abc"), training=False)
    assert unchanged == {}
