"""The "Writing a method" guide's example runs as written, on either backend, and does what it says."""

import re
import sys
from pathlib import Path

import keras
import numpy as np

import keras_mtl

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402

GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "writing-a-method.md"


def guide_method():
    section = GUIDE.read_text()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    if "inverse_ema" not in keras_mtl.available():
        exec(code, {})
    return keras_mtl.registry._METHODS["inverse_ema"]


def test_guide_method_trains_and_weights_by_inverse_moving_average():
    method = guide_method()(three_tasks.task_losses())
    model = three_tasks.model(weights=three_tasks.initial_weights())
    model.compile(keras.optimizers.SGD(0.01), loss=method)
    x, y = three_tasks.data()
    # Independent reference: the EMA of the batch's losses before the step.
    y_pred = model.predict(x, verbose=0)
    losses = np.array(
        [
            np.mean((y_pred["a"] - y["a"]) ** 2),
            float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y["b"], y_pred["b"])),
            np.mean(np.abs(y_pred["c"] - y["c"])),
        ]
    )
    ema = 0.9 + 0.1 * losses
    expected = 3 * (1 / ema) / np.sum(1 / ema)
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    logged = [history.history[f"{task}_weight"][0] for task in "abc"]
    np.testing.assert_allclose(logged, expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.multi_task_state["ema"]), ema, rtol=1e-5)
