"""`task_gradients="batched"` (one vectorised backward pass over the tasks) trains exactly as the default K sequential passes."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402


def weights_after_two_steps(spec, task_gradients):
    method_id, _, representation = spec.partition("@")
    model = three_tasks.model(representation or None, three_tasks.initial_weights(), task_gradients=task_gradients)
    model.compile(keras.optimizers.SGD(0.1), loss=three_tasks.method(method_id))
    x, y = three_tasks.data(n=32)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


# Every step that takes per-task gradients: parameter and representation mode, the batch parts' Jacobians
# (MoDo), the second-order penalty (orthogonal gradients), and SAM's per-task (F-MTL) step.
@pytest.mark.parametrize("spec", ["mgda", "mean@trunk", "modo", "orthogonal_gradients", "sam"])
def test_batched_gives_the_sequential_step(spec):
    sequential = weights_after_two_steps(spec, "sequential")
    batched = weights_after_two_steps(spec, "batched")
    for a, b in zip(sequential, batched):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not all(np.array_equal(a, b) for a, b in zip(sequential, three_tasks.initial_weights())), (
        "the steps moved nothing"
    )


def test_the_choice_is_saved_with_the_model(tmp_path):
    model = three_tasks.model(task_gradients="batched")
    model.compile("sgd", three_tasks.method("mean"))
    model.save(tmp_path / "model.keras")
    assert keras.saving.load_model(tmp_path / "model.keras").task_gradients == "batched"


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match=r"task_gradients must be one of \('sequential', 'batched'\), got 'vmap'"):
        three_tasks.model(task_gradients="vmap")
