"""Faults on either backend: an error that names the task, and a model, optimizer and state left as they were.

TensorFlow raises inside the step (`tf.debugging` assertions); a compiled JAX step cannot raise, so
it applies nothing, records the fault in the model's state, and `fit` raises the same message once
it reads it (see test_fault_groups.py).
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402


def compiled(method_id, optimizer=None):
    model = three_tasks.model(weights=three_tasks.initial_weights())
    model.compile(optimizer or keras.optimizers.Adam(0.01), loss=three_tasks.method(method_id))
    return model


def snapshot(model):
    return [np.array(v) for v in model.get_weights()] + [np.array(v) for v in model.optimizer.variables]


# The bilevel steps' (`meta_weighted`, `sample_weighted`) non-finite-loss case is in the default run, their overflow case is slow.
@pytest.mark.parametrize("method_id", ["uw", "pcgrad", "famo", "auto_lambda", "slgrad"])
def test_non_finite_loss_names_the_task_and_changes_nothing(method_id):
    model = compiled(method_id)
    x, y = three_tasks.data()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # builds the optimizer, moves the state
    before = snapshot(model)
    y["c"][3] = np.inf
    with pytest.raises(Exception, match="the loss of task 'c'.*not finite"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)


def test_negative_loss_for_a_method_that_takes_logs_names_the_task():
    model = compiled("dwa")
    x, y = three_tasks.data()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    before = snapshot(model)
    model.compile(model.optimizer, loss=three_tasks.method("dwa"), loss_weights={"b": -1.0})
    with pytest.raises(Exception, match=r"needs non-negative losses; task \\?'b\\?' has a negative one"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)


# The bilevel engine's two methods: slow, and in CI's `-m guarantee` run (tests/conftest.py `slow_case`).
@pytest.mark.parametrize(
    "method_id",
    ["mgda"] + [pytest.param(i, marks=[pytest.mark.slow, pytest.mark.guarantee]) for i in ("auto_lambda", "slgrad")],
)
def test_overflow_under_a_loss_scale_skips_the_step(method_id):
    model = compiled(method_id, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)))
    x, y = three_tasks.data(n=16)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    weights_before = [np.array(w) for w in model.get_weights()]
    scale_before = float(model.optimizer.dynamic_scale)
    # A finite loss whose gradient is not: tanh saturates at an infinite input.
    x[0, 0] = np.inf
    y["a"][:] = 0.0
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.history["skipped_steps"] == [1.0]
    assert float(model.optimizer.dynamic_scale) == scale_before / 2
    for a, b in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
