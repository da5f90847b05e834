"""Misconfigurations are refused with an error that names them, before anything changes; plain-function
losses align the ranks of targets and outputs as stock Keras does; weights load before `compile`."""

import warnings

import keras
import numpy as np
import pytest
from conftest import INPUT_DIM, make_method, plain_toy_model, toy_data, toy_losses, toy_model

import keras_mtl


def _functional(**kwargs):
    """The toy network as a MultiTaskModel with constructor arguments (shared_layers, representation)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((INPUT_DIM,), name="x")
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(3, name="b")(hidden)}
    return keras_mtl.MultiTaskModel(inputs, outputs, **kwargs)


@keras.saving.register_keras_serializable(package="keras_mtl_tests")
class NamedSubclassedModel(keras_mtl.MultiTaskMixin, keras.Model):
    """A subclassed toy model whose layers have fixed names (its graph is unknown until traced)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trunk = keras.layers.Dense(8, activation="tanh", name="trunk")
        self.head_a = keras.layers.Dense(1, name="head_a")
        self.head_b = keras.layers.Dense(3, name="head_b")

    def call(self, inputs):
        hidden = self.trunk(inputs)
        return {"a": self.head_a(hidden), "b": self.head_b(hidden)}


def _assert_untouched(model):
    assert model.multi_task_method is None and not model.compiled
    assert model.multi_task_state.weights == []


# --- shared_layers and representation ----------------------------------------------------


def test_shared_layers_as_a_string_is_a_type_error():
    with pytest.raises(TypeError, match=r"shared_layers must be a list of layer names.*\['trunk'\]"):
        _functional(shared_layers="trunk")


def test_shared_layers_naming_a_head_is_refused_at_compile():
    model = _functional(shared_layers=["trunk", "a"])
    with pytest.raises(ValueError, match=r"shared_layers names 'a'.*only output 'a'"):
        model.compile("sgd", loss=make_method("pcgrad"))
    _assert_untouched(model)


def test_shared_layers_naming_no_layer_is_refused_at_compile():
    model = _functional(shared_layers=["trunc"])
    with pytest.raises(ValueError, match=r"shared_layers names 'trunc'.*no such layer"):
        model.compile("sgd", loss=make_method("pcgrad"))
    _assert_untouched(model)


def test_shared_layers_naming_a_head_of_a_subclassed_model_is_refused_before_the_first_step(toy):
    x, y = toy
    model = NamedSubclassedModel(shared_layers=["trunk", "head_b"])
    model.compile(keras.optimizers.SGD(0.1), loss=make_method("mean"))
    with pytest.raises(ValueError, match=r"shared_layers names 'head_b'.*only task 'b'"):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_correct_shared_layers_train_as_detected_ones(toy):
    x, y = toy
    trained = []
    for shared_layers in (None, ["trunk"]):
        model = _functional(shared_layers=shared_layers)
        model.compile(keras.optimizers.SGD(0.1), loss=make_method("mean"))
        model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
        trained.append(model.get_weights())
    for named, detected in zip(*trained):
        np.testing.assert_allclose(named, detected, atol=1e-6)


@pytest.mark.parametrize(
    "layer, message",
    [("x", r"representation names the input layer 'x'"), ("nope", r"representation names 'nope'.*no such layer")],
)
def test_representation_must_name_a_computed_layer(layer, message):
    model = _functional(representation=layer)
    with pytest.raises(ValueError, match=message):
        model.compile("sgd", loss=make_method("pcgrad"))
    _assert_untouched(model)


# --- method arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [0.5, "0.5", 2])
def test_scalarization_weights_must_be_a_dict_or_a_list(weights):
    with pytest.raises(TypeError, match="Scalarization: `weights` must be a dict"):
        keras_mtl.Scalarization(toy_losses(), weights=weights)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0.0, 0.0], "all zero"),
        ({"a": 0.0, "b": 0.0}, "all zero"),
        ([float("inf"), 1.0], "finite number ≥ 0"),
        ([float("nan"), 1.0], "finite number ≥ 0"),
        ({"a": 1.0, "b": -0.5}, "finite number ≥ 0"),
    ],
)
def test_scalarization_weights_must_be_finite_non_negative_and_not_all_zero(weights, message):
    with pytest.raises(ValueError, match=message):
        keras_mtl.Scalarization(toy_losses(), weights=weights)


@pytest.mark.parametrize("step_size", [-0.1, 0.0, float("inf"), float("nan")])
def test_hydalearn_step_size_must_be_positive_and_finite(step_size):
    with pytest.raises(ValueError, match=r"HydaLearn: `step_size` must be a finite number > 0"):
        keras_mtl.HydaLearn(toy_losses(), main_task="a", step_size=step_size)


@pytest.mark.parametrize("rho", [0.0, -0.05, float("inf"), float("nan")])
def test_sam_rho_must_be_positive_and_finite(rho):
    with pytest.raises(ValueError, match=r"SAM: `rho` must be a finite number > 0"):
        keras_mtl.SAM(toy_losses(), method="ew", rho=rho)


# --- plain-function losses: ranks aligned as stock Keras aligns them --------------------------


def mean_squared_error(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


@pytest.mark.parametrize("loss_a", ["mse", mean_squared_error])
def test_rank_one_targets_against_a_column_output(loss_a):
    # Targets of shape (n,) against an (n, 1) output: one squared error per sample, not an n×n broadcast.
    x, y = toy_data()
    y = {"a": y["a"][:, 0], "b": y["b"]}
    losses = {"a": loss_a, "b": toy_losses()["b"]}
    model, stock = toy_model(), plain_toy_model()
    model.compile("sgd", loss=keras_mtl.get("ew", losses))
    stock.compile("sgd", loss=losses)
    predictions = model.predict(x, verbose=0)["a"][:, 0].astype("float64")
    expected = np.mean((y["a"].astype("float64") - predictions) ** 2)
    ours = model.evaluate(x, y, batch_size=40, return_dict=True, verbose=0)["a_loss"]
    theirs = stock.evaluate(x, y, batch_size=40, return_dict=True, verbose=0)["a_loss"]
    assert ours == pytest.approx(expected, rel=1e-5)
    assert ours == pytest.approx(theirs, rel=1e-5)


# --- load_weights before compile ------------------------------------------------------------------


def _trained(method_id, toy):
    x, y = toy
    model = toy_model()
    model.compile(keras.optimizers.Adam(0.05), loss=make_method(method_id))
    model.fit(x, y, batch_size=10, epochs=2, verbose=0)
    return model


def _state(model):
    return {v.path.split("/")[-1]: np.array(v.numpy()) for v in model.multi_task_state.weights}


def test_load_weights_before_compile_restores_the_state_when_the_method_comes(toy, tmp_path):
    trained = _trained("uw", toy)
    path = str(tmp_path / "uw.weights.h5")
    trained.save_weights(path)
    model = toy_model(seed=7)
    model.load_weights(path)
    for ours, theirs in zip(model.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    model.compile(keras.optimizers.Adam(0.05), loss=make_method("uw"))
    np.testing.assert_array_equal(_state(model)["log_variances"], _state(trained)["log_variances"])
    assert not np.allclose(_state(model)["log_variances"], make_method("uw").initial_log_variance)


def test_load_weights_before_compile_with_another_method_warns_and_starts_fresh(toy, tmp_path):
    path = str(tmp_path / "uw.weights.h5")
    _trained("uw", toy).save_weights(path)
    model = toy_model()
    model.load_weights(path)
    with pytest.warns(UserWarning, match=r"multi-task state.*1 variable.*DynamicWeightAverage.*ignored"):
        model.compile("sgd", loss=make_method("dwa"))
    for value in _state(model).values():
        np.testing.assert_array_equal(value, 0.0)


def test_loading_another_method_state_into_a_compiled_model_warns_and_keeps_its_state(toy, tmp_path):
    path = str(tmp_path / "ew.weights.h5")
    _trained("ew", toy).save_weights(path)
    model = _trained("uw", toy)
    before = _state(model)
    with pytest.warns(UserWarning, match=r"multi-task state.*0 variable.*UncertaintyWeighting.*ignored"):
        model.load_weights(path)
    np.testing.assert_array_equal(_state(model)["log_variances"], before["log_variances"])


def test_load_weights_before_compile_keeps_working_without_compile(toy, tmp_path):
    # Inference only: the model is never compiled.
    x, _ = toy
    trained = _trained("dwa", toy)
    path = str(tmp_path / "dwa.weights.h5")
    trained.save_weights(path)
    model = toy_model(seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_weights(path)
    np.testing.assert_allclose(model.predict(x, verbose=0)["a"], trained.predict(x, verbose=0)["a"], rtol=1e-6)
