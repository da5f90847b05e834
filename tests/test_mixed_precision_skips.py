"""Under a LossScaleOptimizer, non-finite gradients are an overflow: the step is skipped and the method's state kept.

A skipped step changes nothing but the loss scale (halved, its growth
counter reset), as LossScaleOptimizer does: not the weights, not the
optimizer's iteration count, not the method's state. `fit` counts it in
`skipped_steps` and leaves its task weights out of the epoch averages.
"""

import math

import keras
import numpy as np
import pytest
from conftest import make_method, toy_data, toy_losses, toy_model

import keras_mtl


def _batch(start=0, size=10):
    x, y = toy_data(n=80)
    return x[start : start + size], {k: v[start : start + size] for k, v in y.items()}


def _inf_input_batch():
    """tanh(inf) is finite, its gradient NaN: a non-finite gradient behind finite losses."""
    x, y = _batch(10)
    x = x.copy()
    x[0, 0] = np.inf
    return x, y


def _compiled(method, initial_scale=2.0**8, representation=None):
    model = toy_model()
    if representation is not None:
        model = keras_mtl.MultiTaskModel(
            model.inputs, dict(zip(model.output_names, model.outputs)), representation=representation
        )
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01), initial_scale=initial_scale)
    model.compile(optimizer, loss=method)
    return model, optimizer


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _kept(model, optimizer):
    """Everything a skipped step must keep: weights (method state included) and the inner optimizer's variables."""
    return model.weights + optimizer.inner_optimizer.variables


METHODS = {
    "slaw": lambda: make_method("slaw"),
    "rlw": lambda: make_method("rlw"),
    "famo": lambda: make_method("famo"),
    "pcgrad": lambda: make_method("pcgrad"),
    "gradnorm": lambda: make_method("gradnorm"),
    "nash_mtl": lambda: make_method("nash_mtl", update_weights_every=2),
    "sam_uw": lambda: keras_mtl.SAM(toy_losses(), method="uw"),
}


@pytest.mark.parametrize("method_id", sorted(METHODS))
def test_overflow_skips_the_step_and_keeps_the_method_state(method_id, mixed_precision):
    model, optimizer = _compiled(METHODS[method_id]())
    model.train_on_batch(*_batch(0))
    before = _values(_kept(model, optimizer))
    scale = float(optimizer.dynamic_scale.numpy())
    logs = model.train_on_batch(*_inf_input_batch(), return_dict=True)
    assert logs["skipped_steps"] == 1.0
    assert float(optimizer.dynamic_scale.numpy()) == scale / 2
    assert int(optimizer.iterations.numpy()) == 1
    for variable, old, new in zip(_kept(model, optimizer), before, _values(_kept(model, optimizer))):
        np.testing.assert_array_equal(new, old, err_msg=variable.path)


def test_overflow_in_the_trunk_skips_a_representation_mode_step(mixed_precision):
    # The gradients at the representation are finite; the trunk's backward pass is not.
    model, optimizer = _compiled(make_method("pcgrad"), representation="trunk")
    model.train_on_batch(*_batch(0))
    before = _values(_kept(model, optimizer))
    assert model.train_on_batch(*_inf_input_batch(), return_dict=True)["skipped_steps"] == 1.0
    assert int(optimizer.iterations.numpy()) == 1
    for variable, old, new in zip(_kept(model, optimizer), before, _values(_kept(model, optimizer))):
        np.testing.assert_array_equal(new, old, err_msg=variable.path)


def test_nash_mtl_does_not_reuse_the_weights_of_a_skipped_step(mixed_precision):
    # With update_weights_every=2 the weights of step 1 are reused on step 2.
    # Step 1 is skipped (its Gramian is not finite, its weights 0): step 2
    # must compute its own weights, and move the shared layer.
    model, optimizer = _compiled(make_method("nash_mtl", update_weights_every=2))
    model.train_on_batch(*_inf_input_batch())
    state = model.multi_task_state
    assert int(state["steps"].numpy()) == 0 and np.all(state["nash_weights"].numpy() == 0)
    trunk = np.array(model.get_layer("trunk").kernel.numpy())
    logs = model.train_on_batch(*_batch(0), return_dict=True)
    assert logs["skipped_steps"] == 0.0
    assert int(optimizer.iterations.numpy()) == 1
    assert np.all(state["nash_weights"].numpy() > 0)
    assert np.max(np.abs(model.get_layer("trunk").kernel.numpy() - trunk)) > 1e-4


def test_fit_counts_skipped_steps_and_leaves_their_weights_out(mixed_precision):
    # A loss scale of 2^19 overflows float16 in the backward pass: the first
    # steps are skipped, each halving the scale, until it fits. MGDA's
    # weights sum to 1 on every applied step (and are 0 on an overflowed one).
    initial_scale = 2.0**19
    model, optimizer = _compiled(make_method("mgda"), initial_scale=initial_scale)
    x, y = toy_data(n=80)
    history = model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0).history
    # No growth within 2000 steps: every halving is a skip.
    skips = math.log2(initial_scale / float(optimizer.dynamic_scale.numpy()))
    assert 1 <= skips < 8
    assert history["skipped_steps"] == [skips]
    assert int(optimizer.iterations.numpy()) == 8 - skips
    assert history["a_weight"][0] + history["b_weight"][0] == pytest.approx(1.0, abs=1e-5)


def test_evaluate_and_float32_fit_log_no_skipped_steps():
    model, _ = _compiled(make_method("ew"))
    x, y = toy_data()
    assert "skipped_steps" in model.fit(x, y, epochs=1, verbose=0).history  # a loss scale is in use
    assert "skipped_steps" not in model.evaluate(x, y, verbose=0, return_dict=True)
    plain = toy_model()
    plain.compile("sgd", loss=make_method("ew"))
    assert "skipped_steps" not in plain.fit(x, y, epochs=1, verbose=0).history
