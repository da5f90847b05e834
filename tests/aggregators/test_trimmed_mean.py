"""Coordinate-wise trimmed mean as TorchJD defines it, against numpy."""

import keras
import numpy as np
import pytest
from agg_helpers import numpy, task_gradients
from agg_inputs import jacobian

import keras_mtl
from keras_mtl.aggregators import trimmed_mean_update


def update(jac, trim_number=1):
    return numpy(trimmed_mean_update(np.float32(jac), trim_number))


def float32_rounding(jac):
    """What a float32 mean resolves per coordinate: a few eps32 of the largest component."""
    return 8 * 2.0**-23 * np.abs(jac).max(axis=0)


def reference(jac, trim_number):
    ordered = np.sort(np.asarray(jac, np.float32).astype(np.float64), axis=0)
    return ordered[trim_number : len(jac) - trim_number].mean(axis=0)


def test_by_hand():
    # Column 0: drop 1 and 100, keep 2; column 1: drop -5 and 1, keep 0.
    np.testing.assert_array_equal(update(np.array([[1.0, -5.0], [2.0, 0.0], [100.0, 1.0]])), [2.0, 0.0])


@pytest.mark.parametrize("trim_number", [0, 1, 2])
def test_matches_numpy(trim_number):
    rng = np.random.default_rng(trim_number)
    jac = rng.normal(size=(5, 30)) * rng.uniform(0.1, 10.0, size=(5, 1))
    assert np.all(np.abs(update(jac, trim_number) - reference(jac, trim_number)) <= float32_rounding(jac))


@pytest.mark.parametrize("name", ["norm_ratio_1e6", "scale_1e-10", "scale_1e10", "k12", "duplicates", "zero_row"])
def test_hard_inputs_match_numpy(name):
    jac = jacobian(name)
    d = update(jac)
    assert np.all(np.abs(d - reference(jac, 1)) <= float32_rounding(jac)), name


def test_one_outlier_row_stays_within_the_others_range():
    rng = np.random.default_rng(4)
    inliers = rng.normal(size=(4, 20))
    for scale in (1e3, 1e6, -1e6):
        jac = np.vstack([inliers, scale * rng.normal(size=(1, 20))])
        d = update(jac)
        assert np.all(d >= inliers.min(0) - 1e-6) and np.all(d <= inliers.max(0) + 1e-6)


def test_non_finite_jacobian_gives_a_zero_update():
    np.testing.assert_array_equal(update(np.array([[np.inf, 1.0], [0.0, 1.0], [2.0, 3.0]])), np.zeros(2))


def test_logged_weights_are_the_kept_share_of_each_gradient():
    jac = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    direction, logged, new_state = keras_mtl.TrimmedMean().combine(task_gradients(jac), {}, training=True)
    np.testing.assert_allclose(numpy(direction), [1.0, 2.0])
    np.testing.assert_allclose(numpy(logged), jac @ [1.0, 2.0] / np.sum(jac**2, 1))
    assert new_state == {}


def test_argument_and_task_count_errors():
    with pytest.raises(ValueError, match="TrimmedMean: `trim_number` must be an integer ≥ 0"):
        keras_mtl.TrimmedMean({"a": "mse"}, trim_number=-1)
    with pytest.raises(ValueError, match=r"trim_number=2 needs at least 5 tasks .* got 4"):
        update(np.ones((4, 2)), 2)
    inputs = keras.Input((3,))
    model = keras_mtl.MultiTaskModel(inputs, {t: keras.layers.Dense(1, name=t)(inputs) for t in "ab"})
    with pytest.raises(ValueError, match="needs at least 3 tasks"):
        model.compile("sgd", loss=keras_mtl.TrimmedMean(dict.fromkeys("ab", "mse")))
    method = keras_mtl.TrimmedMean(dict.fromkeys("abcde", "mse"), trim_number=2)
    assert keras_mtl.TrimmedMean.from_config(method.get_config()).get_config() == method.get_config()
