"""SI, the scale-invariant sum of log losses: its weights by hand and its invariance through fit."""

import keras
import numpy as np
import pytest
from conftest import max_abs_difference, toy_data, toy_losses, toy_model
from test_weightings_rules import _state, _weights

import keras_mtl


def test_weights_are_the_coefficients_over_the_losses():
    # total = Σ c_k log L_k, so w_k = c_k / L_k: L = [2, 0.5] gives [0.5, 2]; c = {a: 2, b: 1} gives [1, 2].
    plain = keras_mtl.ScaleInvariant(toy_losses())
    np.testing.assert_allclose(_weights(plain, _state(plain), [2.0, 0.5]), [0.5, 2.0], rtol=1e-6)
    weighted = keras_mtl.ScaleInvariant(toy_losses(), weights={"b": 1.0, "a": 2.0})
    np.testing.assert_allclose(_weights(weighted, _state(weighted), [2.0, 0.5]), [1.0, 2.0], rtol=1e-6)


def test_every_weighted_loss_is_its_coefficient_whatever_the_scale():
    method = keras_mtl.ScaleInvariant(toy_losses(), weights=[0.3, 0.7])
    state = _state(method)
    for losses in ([2.0, 0.5], [2e4, 0.5], [2.0, 5e-4]):
        losses = np.array(losses)
        # w_k·L_k = c_k·L_k/(L_k + ε), ε = 1e-8: c_k up to the guard (2e-5 relative at L = 5e-4).
        np.testing.assert_allclose(
            _weights(method, state, losses) * losses, [0.3, 0.7] * losses / (losses + 1e-8), rtol=1e-6
        )
    # A zero loss gets the finite weight c/ε.
    assert np.all(np.isfinite(_weights(method, state, [0.0, 1.0])))


def _fit(loss_weights):
    x, y = toy_data()
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.ScaleInvariant(toy_losses()), loss_weights=loss_weights)
    history = model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0).history
    return model, history


def test_rescaling_a_task_loss_leaves_training_unchanged():
    # loss_weights multiplies each task's loss before the method sees it: a pure change of scale.
    model, history = _fit(None)
    scaled, scaled_history = _fit({"a": 100.0, "b": 0.01})
    assert max_abs_difference(model.get_weights(), scaled.get_weights()) < 1e-5
    np.testing.assert_allclose(np.array(scaled_history["a_loss"]) / 100.0, history["a_loss"], rtol=1e-4)
    assert all(np.all(np.isfinite(values)) for values in history.values())
    # The plain sum is not scale invariant: the same rescaling changes its training.
    plain, rescaled = toy_model(), toy_model()
    plain.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.get("ew", toy_losses()))
    rescaled.compile(
        keras.optimizers.SGD(0.05), loss=keras_mtl.get("ew", toy_losses()), loss_weights={"a": 100.0, "b": 0.01}
    )
    x, y = toy_data()
    plain.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    rescaled.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    assert max_abs_difference(plain.get_weights(), rescaled.get_weights()) > 1e-2


def test_arguments_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="ScaleInvariant: `weights` must be .* each value a finite number ≥ 0"):
        keras_mtl.ScaleInvariant(toy_losses(), weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="needs at least 2 tasks"):
        keras_mtl.ScaleInvariant({"a": "mse"}).check_num_tasks(1)
    method = keras_mtl.ScaleInvariant(toy_losses(), weights={"a": 0.25, "b": 0.75})
    config = method.get_config()
    assert config["weights"] == {"a": 0.25, "b": 0.75}
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == config
