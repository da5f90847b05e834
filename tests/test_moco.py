"""MoCo: by hand over steps, against a float64 reference, its defining property, hard inputs, arguments."""

import keras
import numpy as np
import pytest
from conftest import toy_losses
from test_excess_mtl import steps

import keras_mtl


def project_to_simplex(v):
    """Euclidean projection onto {x ≥ 0, Σx = 1} (Duchi et al. 2008), float64."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    support = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[support] / (support + 1), 0.0)


def reference(jacobians, beta=0.1, gamma=0.1, rho=0.1, normalization="none", losses=None):
    """The first author's rule (heshandevaka/Trade-Off-MOL) in float64: (λ, d, Y) per step."""
    num_tasks = np.shape(jacobians[0])[0]
    losses = np.ones(num_tasks) if losses is None else np.asarray(losses, np.float64)
    tracked, weights, results = 0.0, np.full(num_tasks, 1.0 / num_tasks), []
    for jacobian in np.asarray(jacobians, np.float64):
        tracked = tracked - beta * (tracked - jacobian)
        norms = np.linalg.norm(tracked, axis=1)
        divisors = {"none": np.ones(num_tasks), "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
        rows = tracked / divisors[:, None]
        weights = project_to_simplex(weights - gamma * (rows @ (rows.T @ weights) + rho * weights))
        results.append((weights, weights @ rows, tracked))
    return results


def test_hand_computed_two_steps():
    # β = 1 tracks J exactly, ρ = 0. Step 1: Y = diag(2, 1), YYᵀλ = [2, 0.5] at λ = [½, ½];
    # λ − 0.1·[2, 0.5] = [0.3, 0.45], projected: + 0.125 each → [0.425, 0.575]; d = [0.85, 0.575].
    # Step 2, the same J: YYᵀλ = [1.7, 0.575]; [0.255, 0.5175] + (1 − 0.7725)/2 → [0.36875, 0.63125].
    method = keras_mtl.MoCo(toy_losses(), beta=1.0, gamma=0.1, rho=0.0)
    (w1, d1), (w2, d2) = steps(method, [[[2, 0], [0, 1]]] * 2)
    np.testing.assert_allclose(w1, [0.425, 0.575], rtol=1e-6)
    np.testing.assert_allclose(d1, [0.85, 0.575], rtol=1e-6)
    np.testing.assert_allclose(w2, [0.36875, 0.63125], rtol=1e-6)
    np.testing.assert_allclose(d2, [0.7375, 0.63125], rtol=1e-6)


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_matches_the_float64_reference_over_steps(normalization):
    rng = np.random.default_rng(0)
    jacobians = [rng.normal(size=(3, 6)) for _ in range(5)]
    losses = [0.5, 2.0, 3.0]
    results = steps(keras_mtl.MoCo(toy_losses(), gamma=0.5, normalization=normalization), jacobians, losses)
    expected = reference(jacobians, gamma=0.5, normalization=normalization, losses=losses)
    for (weights, direction), (expected_weights, expected_direction, _) in zip(results, expected):
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(direction, expected_direction, rtol=1e-4, atol=1e-6)


def test_weights_stay_on_the_simplex_the_update_uses_the_tracked_rows_and_y_tracks_j():
    rng = np.random.default_rng(2)
    jacobian = rng.normal(size=(3, 4))
    results = steps(keras_mtl.MoCo(toy_losses(), beta=0.3, gamma=1.0), [jacobian] * 30)
    for t, (weights, direction) in enumerate(results, start=1):
        assert np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-6
        # d = Yᵀλ with Y = (1 − (1 − β)^t)·J for a constant J: it tracks J, not the step's J itself.
        np.testing.assert_allclose(direction, weights @ ((1 - 0.7**t) * jacobian), rtol=1e-4, atol=1e-6)


def test_a_gradient_norm_ratio_of_1e6():
    rng = np.random.default_rng(3)
    jacobians = [rng.normal(size=(2, 5)) * np.array([[1e3], [1e-3]]) for _ in range(3)]
    results = steps(keras_mtl.MoCo(toy_losses()), jacobians)
    for (weights, direction), (expected_weights, expected_direction, _) in zip(results, reference(jacobians)):
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            direction, expected_direction, rtol=1e-4, atol=1e-4 * np.abs(expected_direction).max()
        )
    # The large task's tracked row dominates Ŷ Ŷᵀ: all the weight goes to the small one.
    np.testing.assert_allclose(results[-1][0], [0.0, 1.0], atol=1e-6)


def test_a_zero_row_under_l2_normalization_stays_zero():
    weights, direction = steps(keras_mtl.MoCo(toy_losses(), normalization="l2"), [[[0.0, 0.0], [3.0, 4.0]]])[0]
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
    np.testing.assert_allclose(direction, weights[1] * np.array([0.6, 0.8]), rtol=1e-6)


def test_arguments_are_checked_and_round_trip():
    for bad in ({"beta": 0.0}, {"beta": 1.5}, {"gamma": -1.0}, {"rho": -0.1}, {"normalization": "max"}):
        with pytest.raises(ValueError, match=r"MoCo: `(beta|gamma|rho|normalization)` must be"):
            keras_mtl.MoCo(toy_losses(), **bad)
    assert keras_mtl.MoCo(toy_losses(), normalization="loss").needs_non_negative_losses
    assert not keras_mtl.MoCo(toy_losses()).needs_non_negative_losses
    method = keras_mtl.get("moco", toy_losses())
    assert isinstance(method, keras_mtl.MoCo) and method.parameter_mode_only
    method = keras_mtl.MoCo(toy_losses(), beta=0.5, gamma=0.2, rho=0.0, normalization="loss+")
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == method.get_config()
