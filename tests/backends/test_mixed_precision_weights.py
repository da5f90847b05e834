"""Under mixed_float16, a task whose losses overflow float16 makes the first steps skips; the logged weights stay finite.

A skipped step's weights come from overflowed gradients and may be NaN
(DB-MTL, TrimmedMean, ExcessMTL and MoCo divide by gradient norms); they are
left out of the epoch's averages, so the logged `{task}_weight` is the
average over the applied steps only, and finite.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402


class StepWeights(keras.callbacks.Callback):
    """The running logs after every batch: (skipped steps so far, the weights' running averages)."""

    def on_train_begin(self, logs=None):
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append((float(logs["skipped_steps"]), [float(logs[f"{task}_weight"]) for task in "abc"]))


@pytest.mark.parametrize("method_id", ["db_mtl", "trimmed_mean", "excess_mtl", "moco"])
def test_skipped_steps_leave_the_logged_weights_finite(method_id, mixed_precision):
    model = three_tasks.model(weights=three_tasks.initial_weights())
    model.compile(keras.optimizers.Adam(0.01), loss=three_tasks.method(method_id))
    x, y = three_tasks.data(n=192)
    y = {**y, "a": y["a"] * 1000}  # task a's losses (~1e6) overflow float16 under the initial loss scale 2^15
    steps = StepWeights()
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[steps]).history
    skipped = history["skipped_steps"][0]
    assert 1 <= skipped < 12  # some skipped, some applied
    assert int(model.optimizer.iterations.numpy()) == 12 - skipped
    for task in "abc":
        assert np.isfinite(history[f"{task}_weight"][0]), task
    # While only skips have happened the averages are empty (0); from the first applied step on they are that step's weights.
    first_applied = next(i for i, (count, _) in enumerate(steps.steps) if count == i)
    for _, weights in steps.steps[:first_applied]:
        assert weights == [0.0, 0.0, 0.0]
    assert all(np.isfinite(weights).all() for _, weights in steps.steps)
