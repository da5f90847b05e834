"""Re-compiling with another method: the weights stay, the old method's state goes, the new one starts
fresh; the same configuration keeps its state; a refused compile changes nothing; clones and saved
files follow the current method."""

import warnings

import keras
import numpy as np
import pytest
from conftest import SubclassedToyModel, make_method, max_abs_difference, toy_losses, toy_model
from support import dense_gradients

import keras_mtl


def _state(model):
    return {v.path.split("/")[-1]: np.array(v.numpy()) for v in model.multi_task_state.weights}


def _layer_weights(model):
    return [w for name in ("trunk", "a", "b") for w in model.get_layer(name).get_weights()]


def _trained(method, toy, optimizer=None, model=None):
    x, y = toy
    model = model or toy_model()
    model.compile(optimizer or keras.optimizers.Adam(0.05), loss=method)
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    return model


def test_switching_methods_keeps_the_weights_and_starts_the_new_state_fresh(toy):
    x, y = toy
    model = _trained(make_method("uw"), toy)
    weights = _layer_weights(model)
    model.compile(keras.optimizers.Adam(0.05), loss=make_method("dwa"))
    assert type(model.multi_task_method) is keras_mtl.DynamicWeightAverage
    assert sorted(_state(model)) == [
        "epoch_batches",
        "epoch_loss_sum",
        "epochs_seen",
        "last_epoch_mean",
        "second_last_epoch_mean",
    ]
    assert all(np.all(value == 0.0) for value in _state(model).values())
    assert not any("log_variances" in v.path for v in model.weights + model.trainable_variables)
    assert max_abs_difference(_layer_weights(model), weights) == 0.0
    history = model.fit(x, y, batch_size=10, epochs=2, verbose=0).history
    assert history["a_weight"] == [1.0, 1.0] and _state(model)["epochs_seen"] == 2.0
    # And back to UW: its log-variances start again from their initial value.
    model.compile(keras.optimizers.Adam(0.05), loss=make_method("uw"))
    np.testing.assert_array_equal(_state(model)["log_variances"], [-0.5, -0.5])
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)


def _step_and_expect(model, x, y, task_weights, weighted_heads):
    """One train_on_batch; the layers' weights must be `dense_gradients.sgd_step` of the previous ones."""
    before = _layer_weights(model)
    logs = model.train_on_batch(x, y, return_dict=True)
    gradients = dense_gradients.task_gradients(before, x, y, {"a": "mse", "b": "sce"})
    np.testing.assert_allclose([logs["a_loss"], logs["b_loss"]], [gradients[t]["loss"] for t in "ab"], rtol=1e-5)
    np.testing.assert_allclose([logs["a_weight"], logs["b_weight"]], task_weights, rtol=1e-6)
    for got, want in zip(
        _layer_weights(model), dense_gradients.sgd_step(before, gradients, task_weights, 0.05, weighted_heads)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_switching_to_a_gradient_method_and_back(toy):
    # After UW-SO, the mean gradient's step (trunk along ½Σ∇L_k, heads their own ∇L_k), then EW's (∇ΣL_k):
    # each new method's rule from the first step, none of UW-SO's weights left.
    x, y = toy
    x, y = x[:10], {task: value[:10] for task, value in y.items()}
    model = _trained(make_method("uw_so"), toy)
    model.compile(keras.optimizers.SGD(0.05), loss=make_method("mean"))
    _step_and_expect(model, x, y, [0.5, 0.5], weighted_heads=False)
    model.compile(keras.optimizers.SGD(0.05), loss=make_method("ew"))
    _step_and_expect(model, x, y, [1.0, 1.0], weighted_heads=True)


def test_the_state_is_keyed_by_the_whole_configuration(toy):
    # SAM(uw) then SAM(pcgrad): the same class, another method inside; UW's state must go.
    model = _trained(keras_mtl.SAM(toy_losses(), method="uw"), toy)
    assert "log_variances" in _state(model)
    model.compile(keras.optimizers.Adam(0.05), loss=keras_mtl.SAM(toy_losses(), method="pcgrad"))
    assert "log_variances" not in _state(model)
    assert isinstance(model.multi_task_method.method, keras_mtl.PCGrad)


def test_recompiling_with_the_same_configuration_keeps_the_state(toy):
    x, y = toy
    model = _trained(make_method("uw"), toy)
    learned = _state(model)["log_variances"]
    assert not np.allclose(learned, -0.5)
    state_layer = model.multi_task_state
    model.compile(keras.optimizers.Adam(0.001), loss=make_method("uw"))  # a new learning rate
    assert model.multi_task_state is state_layer
    np.testing.assert_array_equal(_state(model)["log_variances"], learned)
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)


def test_a_refused_compile_changes_nothing(toy):
    model = _trained(make_method("uw"), toy)
    method, state_layer, optimizer = model.multi_task_method, model.multi_task_state, model.optimizer
    state = _state(model)
    with pytest.raises(ValueError, match="Scalarization: `weights` has 3 entries for 2 tasks"):
        model.compile("sgd", loss=keras_mtl.Scalarization(toy_losses(), weights=[0.2, 0.3, 0.5]))
    assert model.multi_task_method is method and model.multi_task_state is state_layer and model.optimizer is optimizer
    for name, value in _state(model).items():
        np.testing.assert_array_equal(value, state[name])
    clone = keras.models.clone_model(model)
    assert type(clone.multi_task_method) is keras_mtl.UncertaintyWeighting


def test_a_built_optimizer_cannot_take_a_new_method_state(toy):
    # The optimizer holds slots for the variables it was built for: UW's log-variances would be
    # unknown to it (or, leaving UW, its slots for them would be saved with the model).
    model = _trained(make_method("ew"), toy)
    optimizer = model.optimizer
    with pytest.raises(ValueError, match=r"optimizer.*already built.*UncertaintyWeighting.*new optimizer"):
        model.compile(optimizer, loss=make_method("uw"))
    assert type(model.multi_task_method) is keras_mtl.EqualWeighting and model.multi_task_state.weights == []
    # A method without trainable state can take the same optimizer, and keeps its step count.
    iterations = int(optimizer.iterations.numpy())
    model.compile(optimizer, loss=make_method("dwa"))
    x, y = toy
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == iterations + 4


@pytest.mark.parametrize("build", [toy_model, SubclassedToyModel], ids=["functional", "subclassed"])
def test_clone_model_after_a_switch(build, toy):
    x, y = toy
    keras.utils.set_random_seed(2)
    model = _trained(make_method("uw"), toy, model=build())
    model.compile(keras.optimizers.Adam(0.05), loss=make_method("dwa"))
    clone = keras.models.clone_model(model)
    assert type(clone.multi_task_method) is keras_mtl.DynamicWeightAverage
    assert sorted(_state(clone)) == sorted(_state(model))
    original_state = _state(model)
    history = clone.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0).history
    # The clone's DWA runs its own rule: weight 1 in its first epoch, and that epoch's mean losses (4 equal
    # batches: the logged means) kept for the next; the original's state is not touched.
    assert history["a_weight"] == [1.0] and history["b_weight"] == [1.0]
    state = _state(clone)
    assert state["epochs_seen"] == 1.0
    np.testing.assert_allclose(state["last_epoch_mean"], [history["a_loss"][0], history["b_loss"][0]], rtol=1e-5)
    for name, value in _state(model).items():
        np.testing.assert_array_equal(value, original_state[name], err_msg=name)


def test_saved_files_after_a_switch_hold_the_current_state_only(toy, tmp_path):
    x, y = toy
    model = _trained(make_method("uw"), toy)
    model.compile(keras.optimizers.Adam(0.05), loss=make_method("dwa"))
    model.fit(x, y, batch_size=10, epochs=2, verbose=0)
    state = _state(model)

    path = tmp_path / "switched.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.multi_task_method) is keras_mtl.DynamicWeightAverage
    assert sorted(_state(loaded)) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(_state(loaded)[name], value)
    assert max_abs_difference(loaded.get_weights(), model.get_weights()) == 0.0

    # A weights file (what BackupAndRestore writes) loads into a model compiled with DWA directly,
    # optimizer included, without a warning.
    weights_path = str(tmp_path / "switched.weights.h5")
    model.save_weights(weights_path)
    fresh = toy_model(seed=9)
    fresh.compile(keras.optimizers.Adam(0.05), loss=make_method("dwa"))
    fresh.optimizer.build(fresh.trainable_variables)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_weights(weights_path)
    for name, value in state.items():
        np.testing.assert_array_equal(_state(fresh)[name], value)
    assert int(fresh.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())


def test_backup_and_restore_after_a_switch(toy, tmp_path):
    x, y = toy
    backup = str(tmp_path / "backup")
    model = _trained(make_method("uw"), toy)
    model.compile(keras.optimizers.Adam(0.05), loss=make_method("dwa"))
    model.fit(
        x,
        y,
        batch_size=10,
        epochs=2,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)],
    )
    resumed = toy_model(seed=9)
    resumed.compile(keras.optimizers.Adam(0.05), loss=make_method("dwa"))
    history = resumed.fit(
        x, y, batch_size=10, epochs=3, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup)]
    ).history
    assert len(history["loss"]) == 1  # resumed at epoch 2
    assert _state(resumed)["epochs_seen"] == 3.0
