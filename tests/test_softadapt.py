"""SoftAdapt: the finite-difference slopes, the three variants on the authors' examples, and the recording."""

import keras
import numpy as np
import pytest
from conftest import toy_losses, toy_model
from test_weightings_rules import _apply, _numpy, _state, _tensor, _weights

import keras_mtl
from keras_mtl.weightings.softadapt import forward_difference

# The authors' README examples: five recorded values per loss component.
README_LOSSES = np.array(
    [[1, 2, 3, 4, 5], [150, 100, 50, 10, 0.1], [1500, 1000, 500, 100, 1], [10, 20, 30, 40, 50]], np.float64
)
README_WEIGHTS = {  # β = 0.1, the README's printed outputs
    ("original", 3): [9.9343e-01, 6.5666e-03, 3.8908e-22],
    ("normalized", 3): [0.3221, 0.3251, 0.3528],
    ("loss_weighted", 3): [8.7978e-01, 1.2022e-01, 7.1234e-20],
    ("original", 4): [2.8850e-01, 1.9070e-03, 1.1299e-22, 7.0959e-01],
    ("normalized", 4): [0.2436, 0.2459, 0.2673, 0.2432],
    ("loss_weighted", 4): [3.8861e-02, 5.3104e-03, 3.1465e-21, 9.5583e-01],
}
TASKS = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "points, stencil",
    [
        (2, [-1, 1]),  # the reference code's constants for orders 1, 3 and 5
        (4, [-11 / 6, 3, -3 / 2, 1 / 3]),
        (6, [-137 / 60, 5, -5, 10 / 3, -5 / 4, 1 / 5]),
        (5, [-25 / 12, 4, -3, 4 / 3, -1 / 4]),  # findiff's forward stencil of accuracy 4 (the README's default)
    ],
)
def test_forward_difference_stencils(points, stencil):
    np.testing.assert_allclose(forward_difference(points), stencil, rtol=1e-12, atol=1e-12)


def _with_history(history, **kwargs):
    """A method and state whose window holds `history` (K, n), as if every value had been recorded."""
    tasks = TASKS[: len(history)]
    method = keras_mtl.SoftAdapt({task: "mse" for task in tasks}, window=history.shape[1], **kwargs)
    state = _state(method, tasks)
    state["loss_history"] = _tensor(history)
    state["recorded"] = _tensor(history.shape[1])
    return method, state


@pytest.mark.parametrize("variant, tasks", sorted(README_WEIGHTS))
def test_the_authors_readme_examples(variant, tasks):
    method, state = _with_history(README_LOSSES[[0, 1, 2, 3][:tasks]], variant=variant, beta=0.1)
    weights = _weights(method, state, np.ones(tasks), training=False)
    np.testing.assert_allclose(weights, README_WEIGHTS[variant, tasks], rtol=2e-3)


def test_a_softmax_over_the_rates_of_change():
    # Window 2: s = L(t) − L(t−1) = [1, −2, 0]; original: α ∝ exp(β s).
    history = np.array([[3.0, 4.0], [5.0, 3.0], [2.0, 2.0]])
    slopes = history[:, 1] - history[:, 0]
    for beta in (0.5, -1.0):
        method, state = _with_history(history, variant="original", beta=beta)
        expected = np.exp(beta * slopes) / np.exp(beta * slopes).sum()
        np.testing.assert_allclose(_weights(method, state, [1.0, 1.0, 1.0], training=False), expected, rtol=1e-6)
    # β = 0 is uniform; a constant added to every value changes no slope (original variant).
    flat, flat_state = _with_history(history, variant="original", beta=0.0)
    np.testing.assert_allclose(_weights(flat, flat_state, [1.0, 1.0, 1.0], training=False), [1 / 3] * 3, rtol=1e-6)
    shifted, shifted_state = _with_history(history + 100.0, variant="original", beta=0.5)
    np.testing.assert_allclose(
        _weights(shifted, shifted_state, [1.0, 1.0, 1.0], training=False),
        np.exp(0.5 * slopes) / np.exp(0.5 * slopes).sum(),
        rtol=1e-5,
    )


def test_normalised_slopes_that_sum_to_zero_give_uniform_weights():
    method, state = _with_history(np.array([[1.0, 2.0], [2.0, 1.0]]), variant="normalized", beta=5.0)
    np.testing.assert_allclose(_weights(method, state, [1.0, 1.0], training=False), [0.5, 0.5], rtol=1e-6)


def test_step_recording_uses_the_current_loss_and_waits_for_a_full_window():
    method = keras_mtl.SoftAdapt(toy_losses(), beta=1.0, window=2, variant="original", record="step")
    state = _state(method)
    np.testing.assert_allclose(_weights(method, state, [2.0, 4.0]), [0.5, 0.5])  # one value: 1/K
    # Window [[2, 3], [4, 1]]: s = [1, −3]; α = softmax(s).
    expected = np.exp([1.0, -3.0]) / np.exp([1.0, -3.0]).sum()
    np.testing.assert_allclose(_weights(method, state, [3.0, 1.0]), expected, rtol=1e-6)
    np.testing.assert_allclose(
        _weights(method, state, [9.0, 9.0], training=False), expected, rtol=1e-6
    )  # evaluation records nothing
    np.testing.assert_allclose(_numpy(state["loss_history"]), [[2.0, 3.0], [4.0, 1.0]])


def test_epoch_recording_through_fit(toy):
    # Window 2 of epoch means: epochs 0 and 1 use 1/K; epoch 2 uses the loss-weighted rule on
    # the logged means of epochs 0 and 1 (equal batches: History's epoch mean is the recorded one).
    x, y = toy
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.1), loss=keras_mtl.SoftAdapt(toy_losses(), beta=5.0, window=2))
    history = model.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose([history["a_weight"][:2], history["b_weight"][:2]], 0.5)
    means = np.array([history["a_loss"][:2], history["b_loss"][:2]], np.float64)
    slopes = means[:, 1] - means[:, 0]
    scores = means.mean(axis=1) * np.exp(5.0 * (slopes - slopes.max()))
    np.testing.assert_allclose([history["a_weight"][2], history["b_weight"][2]], scores / scores.sum(), rtol=1e-5)
    assert not np.allclose(scores / scores.sum(), 0.5, atol=1e-3)
    np.testing.assert_allclose(
        _numpy(model.multi_task_state["loss_history"]), [history["a_loss"][1:], history["b_loss"][1:]], rtol=1e-5
    )


def test_only_the_loss_weighted_variant_needs_non_negative_losses():
    assert keras_mtl.SoftAdapt(toy_losses()).needs_non_negative_losses
    assert not keras_mtl.SoftAdapt(toy_losses(), variant="original").needs_non_negative_losses
    assert not keras_mtl.SoftAdapt(toy_losses(), variant="normalized").needs_non_negative_losses


def test_arguments_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="SoftAdapt: `window` must be an integer ≥ 2"):
        keras_mtl.SoftAdapt(toy_losses(), window=1)
    with pytest.raises(ValueError, match="SoftAdapt: `variant` must be one of"):
        keras_mtl.SoftAdapt(toy_losses(), variant="softmax")
    with pytest.raises(ValueError, match="SoftAdapt: `record` must be one of"):
        keras_mtl.SoftAdapt(toy_losses(), record="batch")
    method = keras_mtl.SoftAdapt(toy_losses(), beta=-0.5, window=3, variant="normalized", record="step")
    config = method.get_config()
    assert (config["beta"], config["window"], config["variant"], config["record"]) == (-0.5, 3, "normalized", "step")
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == config


def test_epoch_recording_counts_only_completed_epochs_with_steps():
    method = keras_mtl.SoftAdapt(toy_losses(), window=2)
    state = _state(method)
    _apply(state, method.end_epoch(state))  # an epoch without training steps records nothing
    assert _numpy(state["recorded"]) == 0.0
    _weights(method, state, [8.0, 8.0])  # an interrupted epoch's step ...
    _apply(state, method.begin_epoch(state))  # ... is dropped when the epoch starts again
    _weights(method, state, [2.0, 4.0])
    _weights(method, state, [4.0, 2.0])
    _apply(state, method.end_epoch(state))
    np.testing.assert_allclose(_numpy(state["loss_history"]), [[0.0, 3.0], [0.0, 3.0]])
    assert _numpy(state["recorded"]) == 1.0


def test_step_recording_has_no_epoch_state():
    method = keras_mtl.SoftAdapt(toy_losses(), window=2, record="step")
    state = _state(method)
    assert sorted(state) == ["loss_history", "recorded"]
    assert method.begin_epoch(state) == {} and method.end_epoch(state) == {} and not method.works_per_epoch
