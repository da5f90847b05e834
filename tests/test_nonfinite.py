"""Non-finite values behind finite losses, without a loss scale: an error that names the cause, and nothing changed.

The cause is named before the update: a task's gradient (gradient methods),
a variable's gradient (loss weightings), a method's weight, weighted loss or
state. "Nothing changed" means the model's weights (the method's state
included), the optimizer's variables (its iteration count included).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_method, toy_data, toy_losses, toy_model

import keras_mtl

# The graph error message escapes the quotes around names.
Q = r"\\?'"


def _batch(start=0, size=10, label_scale=1.0):
    x, y = toy_data()
    return x[start : start + size], {"a": label_scale * y["a"][start : start + size], "b": y["b"][start : start + size]}


def _inf_input_batch():
    """One inf entry: every trunk unit is tanh(±inf) = ±1, finite, with gradient inf·0 = NaN."""
    x, y = _batch(10)
    x = x.copy()
    x[0, 0] = np.inf
    return x, y


def _trained(method, optimizer=None, first_batch=None, **model_kwargs):
    """The toy model after one clean step (so that the running state is not at its initial value)."""
    inputs, outputs = _toy_layers()
    model = keras_mtl.MultiTaskModel(inputs, outputs, **model_kwargs)
    model.compile(optimizer or keras.optimizers.Adam(0.01), loss=method)
    model.train_on_batch(*(first_batch or _batch()))
    return model


def _untrained(method, **model_kwargs):
    """The toy model compiled, its optimizer built: for a method refused on the very first step."""
    inputs, outputs = _toy_layers()
    model = keras_mtl.MultiTaskModel(inputs, outputs, **model_kwargs)
    model.compile(keras.optimizers.Adam(0.01), loss=method)
    model.optimizer.build(model.trainable_variables)
    return model


def _toy_layers():
    model = toy_model()
    return model.inputs, dict(zip(model.output_names, model.outputs))


def _everything(model):
    """Every value a step could change: weights (method state included) and optimizer variables."""
    return [np.array(v.numpy()) for v in model.weights + model.optimizer.variables]


def _assert_unchanged(model, before):
    after = _everything(model)
    assert len(after) == len(before)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)


def _assert_refused(model, batch, message):
    before = _everything(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        model.train_on_batch(*batch)
    _assert_unchanged(model, before)


GRADIENT_CAUSE = "although every task" + Q + "s loss is finite"


@pytest.mark.parametrize("method_id", ["ew", "uw", "slaw", "rlw", "famo"])
def test_loss_weighting_names_the_variable(method_id):
    model = _trained(make_method(method_id))
    _assert_refused(
        model, _inf_input_batch(), f"the gradient of variable {Q}trunk/kernel{Q} is not finite {GRADIENT_CAUSE}"
    )


@pytest.mark.parametrize("method_id", ["pcgrad", "mgda", "gradnorm", "nash_mtl"])
def test_gradient_method_names_the_task(method_id):
    model = _trained(make_method(method_id))
    _assert_refused(
        model, _inf_input_batch(), f"the gradient of task {Q}a{Q} with respect to the shared parameters is not finite"
    )


def test_representation_mode_names_the_trunk_variable():
    # The gradient at the representation (tanh's output) is finite; the trunk's own backward pass is not.
    model = _trained(make_method("pcgrad"), representation="trunk")
    _assert_refused(model, _inf_input_batch(), f"the gradient of variable {Q}trunk/kernel{Q} is not finite")


@pytest.mark.parametrize("inner", ["ew", "pcgrad"])
def test_sam_names_the_clean_gradient(inner):
    model = _trained(keras_mtl.SAM(toy_losses(), method=inner, rho=0.05))
    _assert_refused(model, _inf_input_batch(), "the gradient of (variable|task) .* is not finite")


def huge_linear_loss(y_true, y_pred):
    """Finite (~1e25) with a gradient ~1e25: finite, but its squared norm overflows float32."""
    return 1e25 * keras.ops.mean(y_pred, axis=-1)


@pytest.mark.parametrize("representation", [None, "trunk"])
def test_gramian_overflow_is_named(representation):
    model = _untrained(
        make_method("pcgrad", losses={"a": huge_linear_loss, "b": toy_losses()["b"]}), representation=representation
    )
    _assert_refused(
        model,
        _batch(10),
        "the Gramian of the task gradients with respect to the shared (parameters|representation) is not finite",
    )


# --- The method at fault: named, before the update ------------------------------------------------


def test_scalarization_weight_that_overflows_the_weighted_loss():
    # A finite weight 1e30 times a loss ~1e10 overflows float32. (The tiny
    # learning rate keeps the first, finite, step from wrecking the model.)
    model = _trained(keras_mtl.Scalarization(toy_losses(), weights=[1e30, 1.0]), optimizer=keras.optimizers.SGD(1e-40))
    _assert_refused(
        model,
        _batch(10, label_scale=1e5),
        f"Scalarization: the weighted loss \\(weight × loss\\) of task {Q}a{Q} is not finite",
    )


def test_sam_radius_that_overflows_the_perturbed_pass():
    # ρ = 1e38 is finite; ρ·g or the model at θ + ε overflows.
    model = _untrained(keras_mtl.SAM(toy_losses(), method="ew", rho=1e38))
    _assert_refused(
        model,
        _batch(10),
        "SAM" + Q + "s (perturbation|gradient at the perturbed parameters) of variable .* is not finite",
    )


def test_famo_loss_below_its_lower_bound():
    model = _trained(make_method("famo", min_losses=[50.0, 0.0]), first_batch=_batch(label_scale=10.0))
    _assert_refused(
        model, _batch(10), f"FAMO: the loss of task {Q}a{Q} \\(of the batch\\) is below its lower bound 50.0"
    )


@pytest.mark.parametrize("value", [-1000.0, 31.0, float("inf"), float("nan")])
def test_uw_initial_log_variance_range(value):
    with pytest.raises(
        ValueError, match="UncertaintyWeighting: `initial_log_variance` must be a finite number in \\[-30, 30\\]"
    ):
        make_method("uw", initial_log_variance=value)
    make_method("uw", initial_log_variance=-30.0)  # the bound itself is fine


def test_slaw_variance_that_overflows_names_its_state():
    # Losses near 1e23: their square, hence the running variance, overflows float32.
    model = _trained(make_method("slaw"))
    _assert_refused(
        model, _batch(10, label_scale=3e11), f"SLAW{Q}s state {Q}loss_variance{Q} is not finite after this step"
    )


@pytest.mark.parametrize("method_id", ["uw", "imtl_l"])
def test_learned_scale_whose_gradient_overflows_adam(method_id):
    # The gradient of UW's log-variance is a weighted loss, ~1e23 here: finite,
    # but Adam squares it, and the variable became NaN one step later.
    model = _trained(make_method(method_id))
    _assert_refused(model, _batch(10, label_scale=3e11), "gradient for its learned .* overflows float32 when squared")


def test_refused_step_can_be_followed_by_a_good_one():
    model = _trained(make_method("slaw"))
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.train_on_batch(*_inf_input_batch())
    logs = model.train_on_batch(*_batch(20), return_dict=True)
    assert np.isfinite(logs["loss"]) and int(model.optimizer.iterations.numpy()) == 2
    assert "skipped_steps" not in logs  # only a loss scale skips steps
