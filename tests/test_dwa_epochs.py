"""DWA's epoch statistics follow completed epochs only: interrupted epochs, empty epochs, train_on_batch."""

import warnings

import keras
import numpy as np
import pytest
from conftest import compiled_toy_model, toy_losses
from support.state_values import state_values

import keras_mtl


def _state(model):
    return {v.path.split("/")[-1]: keras.ops.convert_to_numpy(v) for v in model.multi_task_state.weights}


def _numpy_losses(model, x, y):
    """The two task losses of one batch in float64: mse for "a", softmax cross-entropy for "b"."""
    predictions = model.predict_on_batch(x)
    squared_error = np.mean((y["a"].astype("float64") - predictions["a"].astype("float64")) ** 2)
    logits = predictions["b"].astype("float64")
    log_softmax = logits - logits.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    cross_entropy = -np.mean(log_softmax[np.arange(len(x)), y["b"]])
    return np.array([squared_error, cross_entropy])


class _InterruptAtBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_epoch_leaves_nothing_in_the_next_epoch_mean(toy):
    x, y = toy
    model = compiled_toy_model("dwa")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0, callbacks=[_InterruptAtBatch()])
    history = model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0).history
    state = _state(model)
    # The completed epoch's mean is that of its own 4 batches: the logged epoch means (equal batch sizes).
    np.testing.assert_allclose(state["last_epoch_mean"], [history["a_loss"][0], history["b_loss"][0]], rtol=1e-5)
    assert state["epochs_seen"] == 1.0


def test_end_epoch_rolls_the_means_after_steps_and_without_steps_returns_the_state_unchanged():
    method = keras_mtl.DynamicWeightAverage(toy_losses())
    state = state_values(method, ["a", "b"])
    state.update(
        last_epoch_mean=np.array([3.0, 6.0], "float32"),
        second_last_epoch_mean=np.array([4.0, 5.0], "float32"),
        epochs_seen=np.float32(2.0),
    )
    # Two steps with losses summing to (2, 8): the epoch's mean (1, 4) becomes the last, (3, 6) the second last.
    stepped = {**state, "epoch_loss_sum": np.array([2.0, 8.0], "float32"), "epoch_batches": np.float32(2.0)}
    expected = {
        "last_epoch_mean": [1.0, 4.0],
        "second_last_epoch_mean": [3.0, 6.0],
        "epochs_seen": 3.0,
        "epoch_loss_sum": [0.0, 0.0],
        "epoch_batches": 0.0,
    }
    new_state = {**stepped, **method.end_epoch(stepped)}
    for name, value in expected.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new_state[name]), value, err_msg=name)
    # With these means the next weights are K·softmax(r/T), r = (1/3, 4/6), T = 2: not the first epochs' 1.
    weights, _ = method.weights(keras.ops.ones((2,)), new_state, training=False)
    ratios = np.array([1 / 3, 4 / 6]) / 2.0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(weights), 2 * np.exp(ratios) / np.exp(ratios).sum(), rtol=1e-6
    )
    # Without steps nothing changes.
    new_state = method.end_epoch(state)
    for name, value in state.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new_state.get(name, value)), value, err_msg=name)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="Keras 3.15's JAX trainer raises StopIteration on a dataset without batches",
)
def test_an_epoch_without_steps_changes_nothing(toy):
    import tensorflow as tf

    x, y = toy
    model = compiled_toy_model("dwa")
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    before = _state(model)
    empty = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).take(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ran out of data")
        model.fit(empty, epochs=1, verbose=0)
    after = _state(model)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_train_on_batch_warns_once_and_end_epoch_closes_the_epoch(toy):
    x, y = toy
    model = compiled_toy_model("dwa")
    batch_losses = []
    for start in range(0, 40, 10):
        xb, yb = x[start : start + 10], {k: v[start : start + 10] for k, v in y.items()}
        batch_losses.append(_numpy_losses(model, xb, yb))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.train_on_batch(xb, yb)
        messages = [str(w.message) for w in caught if "end_epoch" in str(w.message)]
        assert len(messages) == (1 if start == 0 else 0), messages
    assert _state(model)["epochs_seen"] == 0.0  # no epoch ends by itself
    model.end_epoch()
    state = _state(model)
    assert state["epochs_seen"] == 1.0
    np.testing.assert_allclose(state["last_epoch_mean"], np.mean(batch_losses, axis=0), rtol=1e-5)
    np.testing.assert_array_equal(state["epoch_loss_sum"], [0.0, 0.0])


def test_the_train_on_batch_warning_names_the_method(toy):
    x, y = toy
    model = compiled_toy_model("dwa")
    with pytest.warns(UserWarning, match=r"DynamicWeightAverage.*model\.end_epoch\(\)"):
        model.train_on_batch(x[:10], {k: v[:10] for k, v in y.items()})


def test_train_on_batch_does_not_warn_for_a_method_without_epochs(toy):
    x, y = toy
    model = compiled_toy_model("uw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train_on_batch(x[:10], {k: v[:10] for k, v in y.items()})


def test_sam_passes_the_epoch_boundaries_to_its_method():
    sam = keras_mtl.SAM(toy_losses(), method="dwa")
    assert sam.works_per_epoch and not keras_mtl.SAM(toy_losses(), method="uw").works_per_epoch
    state = state_values(sam, ["a", "b"])
    state.update(epoch_loss_sum=np.array([3.0, 4.0], "float32"), epoch_batches=np.float32(2.0))
    state.update(sam.end_epoch(state))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(state["last_epoch_mean"]), [1.5, 2.0])
    state.update(epoch_loss_sum=np.array([3.0, 4.0], "float32"))
    state.update(sam.begin_epoch(state))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(state["epoch_loss_sum"]), [0.0, 0.0])


def test_sam_forwards_every_hook_of_its_method():
    # FAMO's after-update state, lower bounds and flags come through SAM unchanged.
    sam, famo = (
        keras_mtl.SAM(toy_losses(), method=keras_mtl.FAMO(min_losses=[0.5, 0.0])),
        keras_mtl.FAMO(toy_losses(), min_losses=[0.5, 0.0]),
    )
    assert sam.needs_losses_after_update and sam.needs_non_negative_losses
    assert sam.loss_lower_bounds(2) == [0.5, 0.0]
    before, after = np.array([1.0, 4.0], "float32"), np.array([0.75, 4.0], "float32")
    through_sam = sam.after_update(state_values(sam, ["a", "b"]), before, after)
    direct = famo.after_update(state_values(famo, ["a", "b"]), before, after)
    assert sorted(through_sam) == sorted(direct) == ["logits", "logits_adam_m", "logits_adam_steps", "logits_adam_v"]
    for name, value in direct.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(through_sam[name]), keras.ops.convert_to_numpy(value))
    assert not keras_mtl.SAM(toy_losses(), method="mean").needs_losses_after_update
