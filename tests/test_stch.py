"""STCH (smooth Tchebycheff): the warm-up, the nadir epoch and the smooth maximum, by hand and through fit."""

import keras
import numpy as np
import pytest
from conftest import toy_losses, toy_model
from test_weightings_rules import _apply, _numpy, _state, _weights

import keras_mtl


def _stch_value(losses, nadir, mu, preference):
    """The authors' total, K·μ·log Σ exp(λ_k log(L_k/z_k) / μ), in float64."""
    log_losses = np.log(np.asarray(losses, np.float64) / nadir)
    return len(losses) * mu * np.log(np.sum(np.exp(preference * log_losses / mu)))


def _past_warmup(method, nadir):
    """A state in the STCH phase with nadir `nadir`, reached through one nadir epoch of a single batch."""
    state = _state(method)
    _weights(method, state, nadir)
    _apply(state, method.end_epoch(state))
    return state


def test_warmup_then_nadir_epoch_then_stch_by_hand():
    method = keras_mtl.SmoothTchebycheff(toy_losses(), warmup_epochs=1)
    state = _state(method)
    # Epoch 0: plain log losses, w = 1/L; nothing is accumulated.
    np.testing.assert_allclose(_weights(method, state, [4.0, 1.0]), [0.25, 1.0], rtol=1e-6)
    _apply(state, method.end_epoch(state))
    # Epoch 1, the nadir epoch: still w = 1/L; z = mean of its batches = [(2+4)/2, (1+3)/2] = [3, 2].
    np.testing.assert_allclose(_weights(method, state, [2.0, 1.0]), [0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(_weights(method, state, [4.0, 3.0]), [0.25, 1 / 3], rtol=1e-6)
    _apply(state, method.end_epoch(state))
    np.testing.assert_allclose(_numpy(state["nadir"]), [3.0, 2.0], rtol=1e-6)
    # Epoch 2: L = [1.5, 3], ℓ = log(L/z) = log([0.5, 1.5]); μ = 1: softmax(ℓ) = [0.25, 0.75];
    # w = K·softmax(ℓ)/L = 2·[0.25/1.5, 0.75/3] = [1/3, 1/2].
    np.testing.assert_allclose(_weights(method, state, [1.5, 3.0]), [1 / 3, 0.5], rtol=1e-5)
    _apply(state, method.end_epoch(state))
    np.testing.assert_allclose(_numpy(state["nadir"]), [3.0, 2.0], rtol=1e-6)  # set once, in the nadir epoch


@pytest.mark.parametrize("mu, preference", [(1.0, [1.0, 1.0, 1.0]), (0.3, [0.2, 0.5, 0.3]), (2.0, [1.0, 2.0, 0.5])])
def test_weights_are_the_gradient_of_the_smooth_tchebycheff_total(mu, preference):
    # Central differences of the float64 total give w_k = ∂total/∂L_k.
    method = keras_mtl.SmoothTchebycheff(
        {"a": "mse", "b": "mse", "c": "mse"}, mu=mu, warmup_epochs=0, preference=preference
    )
    nadir = np.array([2.0, 0.5, 1.0])
    state = _state(method, ["a", "b", "c"])
    _weights(method, state, nadir)
    _apply(state, method.end_epoch(state))
    losses = np.array([1.2, 0.9, 0.4])
    step = 1e-6
    expected = [
        (_stch_value(losses + step * e, nadir, mu, preference) - _stch_value(losses - step * e, nadir, mu, preference))
        / (2 * step)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(_weights(method, state, losses), expected, rtol=1e-4)


def test_small_mu_is_the_tchebycheff_maximum_and_large_mu_the_sum_of_log_losses():
    # ℓ = log(L/z) = log([0.5, 2]): task b has the largest normalised log loss.
    losses, nadir = [1.0, 1.0], [2.0, 0.5]
    sharp = keras_mtl.SmoothTchebycheff(toy_losses(), mu=1e-3, warmup_epochs=0)
    # μ → 0: total → K·max_k ℓ_k, all its gradient on task b: w·L → [0, K].
    weighted = _weights(sharp, _past_warmup(sharp, nadir), losses, training=False) * losses
    np.testing.assert_allclose(weighted, [0.0, 2.0], atol=1e-6)
    smooth = keras_mtl.SmoothTchebycheff(toy_losses(), mu=1e4, warmup_epochs=0)
    # μ → ∞: softmax(ℓ/μ) → 1/K, so w → 1/L, the warm-up's sum of log losses.
    weighted = _weights(smooth, _past_warmup(smooth, nadir), losses, training=False) * losses
    np.testing.assert_allclose(weighted, [1.0, 1.0], rtol=1e-3)


def test_evaluation_accumulates_nothing():
    method = keras_mtl.SmoothTchebycheff(toy_losses(), warmup_epochs=0)
    state = _state(method)
    _weights(method, state, [2.0, 3.0], training=False)
    assert _numpy(state["epoch_batches"]) == 0.0 and np.all(_numpy(state["epoch_loss_sum"]) == 0.0)


def test_fit_sets_the_nadir_to_the_logged_mean_loss_of_the_nadir_epoch(toy):
    x, y = toy
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.SmoothTchebycheff(toy_losses(), mu=0.5, warmup_epochs=1))
    history = model.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0).history
    for key, values in history.items():
        assert np.all(np.isfinite(values)), key
    # Equal batch sizes: the logged epoch mean of the batch losses is the nadir's average.
    np.testing.assert_allclose(
        _numpy(model.multi_task_state["nadir"]), [history["a_loss"][1], history["b_loss"][1]], rtol=1e-5
    )
    assert _numpy(model.multi_task_state["epochs_seen"]) == 3.0


def test_arguments_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="SmoothTchebycheff: `mu` must be a finite number > 0"):
        keras_mtl.SmoothTchebycheff(toy_losses(), mu=0.0)
    with pytest.raises(ValueError, match="SmoothTchebycheff: `warmup_epochs` must be an integer ≥ 0"):
        keras_mtl.SmoothTchebycheff(toy_losses(), warmup_epochs=-1)
    with pytest.raises(
        ValueError,
        match="SmoothTchebycheff: `preference` must be a list in the model's output order, each value a finite number > 0",
    ):
        keras_mtl.SmoothTchebycheff(toy_losses(), preference=[1.0, 0.0])
    with pytest.raises(ValueError, match="SmoothTchebycheff: `preference` has 3 entries for 2 tasks"):
        toy_model().compile("sgd", loss=keras_mtl.SmoothTchebycheff(toy_losses(), preference=[1.0, 1.0, 1.0]))
    method = keras_mtl.SmoothTchebycheff(toy_losses(), mu=0.1, warmup_epochs=2, preference=[0.3, 0.7])
    config = method.get_config()
    assert (config["mu"], config["warmup_epochs"], config["preference"]) == (0.1, 2, [0.3, 0.7])
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == config


def test_only_completed_epochs_with_steps_count():
    method = keras_mtl.SmoothTchebycheff(toy_losses(), warmup_epochs=0)
    state = _state(method)
    _apply(state, method.end_epoch(state))  # an epoch without training steps
    assert _numpy(state["epochs_seen"]) == 0.0
    _weights(method, state, [8.0, 8.0])  # an interrupted epoch's step ...
    _apply(state, method.begin_epoch(state))  # ... is dropped when the epoch starts again
    _weights(method, state, [2.0, 4.0])
    _apply(state, method.end_epoch(state))
    np.testing.assert_allclose(_numpy(state["nadir"]), [2.0, 4.0])
    assert _numpy(state["epochs_seen"]) == 1.0
