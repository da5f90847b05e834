"""Uncertainty weighting with the positive regulariser log(1 + c²) (Liebel & Körner)."""

import keras
import numpy as np
import pytest
from conftest import toy_losses, toy_model
from test_weightings_rules import _numpy, _state, _state_gradient, _tensor, _total, _weights

import keras_mtl


def test_hand_computed_at_the_initial_scales():
    # c = 1: w = 1/(2·1²) = 0.5; R = 2·log(1 + 1) = 1.386294; L = [2, 3]: total = 0.5·5 + 1.386294 = 3.886294.
    method = keras_mtl.PositiveUncertaintyWeighting(toy_losses())
    layer = keras_mtl.MultiTaskState()
    method.build_state(layer, ["a", "b"])
    assert layer["uncertainty_scales"].trainable
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [2.0, 3.0]), [0.5, 0.5])
    assert _total(method, state, [2.0, 3.0]) == pytest.approx(3.886294, rel=1e-6)
    # c = 2: w = 1/8, R = 2·log 5.
    other = keras_mtl.PositiveUncertaintyWeighting(toy_losses(), initial_scale=2.0)
    assert _total(other, _state(other), [2.0, 3.0]) == pytest.approx(5 / 8 + 2 * np.log(5.0), rel=1e-6)


def test_learned_scales_stop_where_the_regulariser_balances_the_loss():
    # ∂/∂c [L/(2c²) + log(1 + c²)] = −L/c³ + 2c/(1 + c²) = 0  ⇔  2c⁴ = L(1 + c²)  ⇔  c² = (L + √(L² + 8L)) / 4.
    losses = np.array([2.0, 0.05])
    optimum = np.sqrt((losses + np.sqrt(losses**2 + 8 * losses)) / 4)
    method = keras_mtl.PositiveUncertaintyWeighting(toy_losses())
    state = _state(method)
    state["uncertainty_scales"] = _tensor(optimum)
    np.testing.assert_allclose(_state_gradient(method, state, "uncertainty_scales", losses), [0.0, 0.0], atol=1e-5)
    state["uncertainty_scales"] = _tensor(optimum * 1.5)
    assert np.all(_state_gradient(method, state, "uncertainty_scales", losses) > 1e-3)


def test_the_total_stays_positive_where_kendall_s_goes_negative():
    # A small loss L = 0.01: Kendall's ½e^{−s}L + ½s is ½ + ½·log 0.01 = −1.80 at its optimum s = log L;
    # this total is positive for every c (both of its terms are).
    losses = [0.01, 0.01]
    method = keras_mtl.PositiveUncertaintyWeighting(toy_losses())
    state = _state(method)
    for scale in (0.05, 0.3, 1.0, 10.0):
        state["uncertainty_scales"] = _tensor([scale, scale])
        assert _total(method, state, losses) > 0
    kendall = keras_mtl.UncertaintyWeighting(toy_losses())
    kendall_state = _state(kendall)
    kendall_state["log_variances"] = _tensor(np.log(losses))
    assert _total(kendall, kendall_state, losses) < 0


def test_scales_are_trained_through_fit(toy):
    x, y = toy
    model = toy_model()
    model.compile(keras.optimizers.Adam(0.05), loss=keras_mtl.PositiveUncertaintyWeighting(toy_losses()))
    history = model.fit(x, y, batch_size=10, epochs=2, verbose=0).history
    assert all(np.all(np.isfinite(values)) for values in history.values())
    scales = model.multi_task_state["uncertainty_scales"]
    assert any(scales is v for v in model.trainable_variables)
    assert not np.allclose(_numpy(scales), 1.0)
    results = model.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose([results["a_weight"], results["b_weight"]], 0.5 / _numpy(scales) ** 2, rtol=1e-6)


def test_arguments_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="PositiveUncertaintyWeighting: `initial_scale` must be a finite number > 0"):
        keras_mtl.PositiveUncertaintyWeighting(toy_losses(), initial_scale=0.0)
    method = keras_mtl.PositiveUncertaintyWeighting(toy_losses(), initial_scale=0.5)
    config = method.get_config()
    assert config["initial_scale"] == 0.5
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == config
