"""Krum / Multi-Krum as TorchJD defines it, against a numpy reference from the gradients."""

import keras
import numpy as np
import pytest
from agg_helpers import numpy
from agg_inputs import jacobian

import keras_mtl
from keras_mtl.aggregators import krum_weights


def weights(jac, n_byzantine=0, n_selected=1, squared=False):
    jac = np.asarray(jac, np.float64)
    return numpy(krum_weights(np.float32(jac @ jac.T), n_byzantine, n_selected, squared))


def reference(jac, n_byzantine, n_selected, squared=False):
    """Scores from P-space distances: each row's sum over its K - f - 2 nearest other rows; mean of the m best."""
    num = len(jac)
    distances = np.linalg.norm(jac[:, None, :] - jac[None, :, :], axis=-1)
    if squared:
        distances = distances**2
    scores = [np.sort(np.delete(distances[i], i))[: num - n_byzantine - 2].sum() for i in range(num)]
    w = np.zeros(num)
    w[np.argsort(scores, kind="stable")[:n_selected]] = 1.0 / n_selected
    return w


def test_outlier_by_hand():
    # f = 1: each score is the distance to the nearest other row. Rows 0, 1, 2 score 1; row 3, the
    # outlier, scores |(10, 10) - (1, 0)| = sqrt(181). Krum takes row 0 (ties: lowest index),
    # Multi-Krum with m = 3 averages the three inliers.
    jac = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    np.testing.assert_array_equal(weights(jac, 1), [1, 0, 0, 0])
    np.testing.assert_allclose(weights(jac, 1, 3), [1 / 3, 1 / 3, 1 / 3, 0])


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("n_byzantine, n_selected", [(0, 1), (1, 1), (1, 3), (2, 2), (0, 6)])
def test_matches_the_reference(n_byzantine, n_selected, squared):
    rng = np.random.default_rng(n_byzantine * 10 + n_selected)
    for _ in range(5):
        jac = rng.normal(size=(6, 5)) * rng.uniform(0.1, 10.0, size=(6, 1))
        np.testing.assert_allclose(
            weights(jac, n_byzantine, n_selected, squared), reference(jac, n_byzantine, n_selected, squared)
        )


@pytest.mark.parametrize("name", ["norm_ratio_1e6", "scale_1e-10", "scale_1e10", "k12", "duplicates", "zero_row"])
def test_hard_inputs_match_the_reference(name):
    jac = jacobian(name)
    n_byzantine = max(len(jac) - 4, 0) // 2
    np.testing.assert_allclose(weights(jac, n_byzantine, 1), reference(jac, n_byzantine, 1))


def test_one_huge_outlier_is_never_selected():
    rng = np.random.default_rng(3)
    for scale in (1e3, 1e6):
        jac = rng.normal(size=(5, 4)) + 2.0
        jac[rng.integers(5)] *= scale
        outlier = np.argmax(np.linalg.norm(jac, axis=1))
        for n_selected in (1, 2, 3, 4):
            assert weights(jac, 1, n_selected)[outlier] == 0


def test_non_finite_gramian_gives_zero_weights():
    nan = np.float32(np.where(np.eye(3) > 0, np.nan, 0.0))
    np.testing.assert_array_equal(numpy(krum_weights(nan)), np.zeros(3))


def test_argument_and_task_count_errors():
    with pytest.raises(ValueError, match="Krum: `n_byzantine` must be an integer ≥ 0"):
        keras_mtl.Krum({"a": "mse"}, n_byzantine=-1)
    with pytest.raises(ValueError, match="Krum: `n_selected` must be an integer ≥ 1"):
        keras_mtl.Krum({"a": "mse"}, n_selected=0)
    with pytest.raises(ValueError, match=r"n_byzantine=1, n_selected=1 needs at least 4 tasks .* got 3"):
        krum_weights(np.eye(3, dtype=np.float32), 1)
    inputs = keras.Input((3,))
    model = keras_mtl.MultiTaskModel(inputs, {t: keras.layers.Dense(1, name=t)(inputs) for t in "abc"})
    with pytest.raises(ValueError, match="needs at least 5 tasks"):
        model.compile("sgd", loss=keras_mtl.Krum(dict.fromkeys("abc", "mse"), n_byzantine=2))
    method = keras_mtl.Krum(dict.fromkeys("abcd", "mse"), n_byzantine=1, n_selected=2, squared=True)
    assert keras_mtl.Krum.from_config(method.get_config()).get_config() == method.get_config()
