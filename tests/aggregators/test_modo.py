"""MoDo: ``λ ← Π_Δ(λ − γ(J_1 J_2^T λ + ρλ))``, ``d = J_3^T λ`` (or the mean of J_1, J_2), against numpy float64."""

import numpy as np
import pytest
from agg_inputs import jacobian
from parts_helpers import cross, hard_inputs, project_simplex, random_parts, run_combine

import keras_mtl


def reference(steps, gamma=0.1, rho=0.1, batches=3):
    """Per step (d, λ) of MoDo from λ = 1/K, float64."""
    lambdas = np.full(len(steps[0][0]), 1.0 / len(steps[0][0]))
    out = []
    for parts in steps:
        lambdas = project_simplex(lambdas - gamma * (cross(parts[0], parts[1]) @ lambdas + rho * lambdas))
        updated = np.float64(parts[2]) if batches == 3 else (np.float64(parts[0]) + np.float64(parts[1])) / 2
        out.append((updated.T @ lambdas, lambdas))
    return out


@pytest.mark.parametrize("batches", [3, 2])
def test_two_steps_match_the_float64_reference_with_lambda_carried_over(batches):
    rng = np.random.default_rng(0)
    steps = [random_parts(rng, batches), random_parts(rng, batches)]
    method = keras_mtl.MoDo(gamma=0.3, rho=0.1, batches=batches)
    got, state = run_combine(method, steps)
    expected = reference(steps, gamma=0.3, rho=0.1, batches=batches)
    for (direction, weights), (want_direction, want_weights) in zip(got, expected):
        np.testing.assert_allclose(weights, want_weights, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(direction, want_direction, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["modo_weights"], expected[-1][1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(expected[0][1], expected[1][1])  # the state moved


def test_the_step_uses_the_cross_batch_product_j1_j2t_not_a_gramian():
    # A = J_1 J_2^T = [[0, 0], [2, 0]]: A λ = (0, 1) at λ = (½, ½), so with γ = 0.1, ρ = 0
    # λ ← Π(0.5, 0.4) = (0.55, 0.45). Aᵀ would give (0.45, 0.55), J_1 J_1ᵀ (0.5, 0.5), J_2 J_2ᵀ (0.4, 0.6).
    parts = [np.eye(2), np.array([[0.0, 2.0], [0.0, 0.0]]), np.array([[1.0, 3.0], [-1.0, 1.0]])]
    [(direction, weights)], _ = run_combine(keras_mtl.MoDo(gamma=0.1, rho=0.0), [parts])
    np.testing.assert_allclose(weights, [0.55, 0.45], rtol=1e-6)
    np.testing.assert_allclose(direction, 0.55 * parts[2][0] + 0.45 * parts[2][1], rtol=1e-6)


@pytest.mark.parametrize("name", hard_inputs())
def test_lambda_stays_on_the_simplex_on_hard_inputs(name):
    rng = np.random.default_rng(1)
    j = jacobian(name)
    # Three batches: the input, and two noisy draws around it at its own scale.
    noise = lambda: 0.3 * rng.normal(size=j.shape) * np.linalg.norm(j, axis=1, keepdims=True) / np.sqrt(j.shape[1])
    steps = [[j, j + noise(), j + noise()] for _ in range(3)]
    got, state = run_combine(keras_mtl.MoDo(), steps)
    for _, weights in got:
        assert np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-5, (name, weights)
    assert np.all(np.isfinite([d for d, _ in got]))


def test_a_non_finite_cross_product_gives_zero_weights_and_keeps_lambda():
    parts = [np.array([[np.inf, 0.0], [0.0, 1.0]]), np.eye(2), np.eye(2)]
    [(direction, weights)], state = run_combine(keras_mtl.MoDo(), [parts])
    np.testing.assert_array_equal(weights, [0.0, 0.0])
    np.testing.assert_array_equal(direction, [0.0, 0.0])
    np.testing.assert_array_equal(state["modo_weights"], [0.5, 0.5])


def test_declares_its_batches_and_needs_the_shared_parameters():
    assert keras_mtl.MoDo().batch_parts == 3 and keras_mtl.MoDo(batches=2).batch_parts == 2
    assert keras_mtl.MoDo().parameter_mode_only
    method = keras_mtl.MoDo({"a": "mse", "b": "mse"}, gamma=0.01, rho=0.0, batches=2)
    assert type(method).from_config(method.get_config()).get_config() == method.get_config()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"gamma": 0.0}, "MoDo: `gamma` must be a finite number > 0"),
        ({"rho": -0.1}, "MoDo: `rho` must be a finite number ≥ 0"),
        ({"batches": 4}, r"MoDo: `batches` must be an integer in \[2, 3\]"),
    ],
)
def test_bad_arguments_are_errors_naming_them(arguments, message):
    with pytest.raises(ValueError, match=message):
        keras_mtl.MoDo(**arguments)


def test_sam_refuses_a_method_that_draws_several_batches():
    with pytest.raises(ValueError, match="SAM cannot wrap MoDo: it draws 3 batches per step"):
        keras_mtl.SAM({"a": "mse", "b": "mse"}, method="modo")
