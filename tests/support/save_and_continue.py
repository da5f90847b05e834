"""Saving on one backend and continuing on another (run under the KERAS_BACKEND to test).

    python tests/support/save_and_continue.py save FOLDER OUT.npz SPEC...      # trains 2 epochs, saves FOLDER/SPEC.keras, then continues
    python tests/support/save_and_continue.py continue FOLDER OUT.npz SPEC...  # loads each, trains 1 epoch, writes the weights

"Continuing" loads the saved file, trains one more epoch and writes the weights to OUT.npz;
`save` does it on the backend that saved (the reference), `continue` on another.

Random draws are fixed as in one_step.py, so both backends continue with the same numbers.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import one_step  # (importing it fixes keras.random's draws)
import three_tasks


def save(spec, path):
    method_id, _, representation = spec.partition("@")
    model = three_tasks.model(representation or None, three_tasks.initial_weights())
    model.compile(keras.optimizers.Adam(0.01), loss=three_tasks.method(method_id, representation))
    x, y = three_tasks.data()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model.save(path)


def continued(path):
    model = keras.saving.load_model(path)
    x, y = three_tasks.data(seed=1)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return one_step.float_weights(model)


if __name__ == "__main__":
    command, folder, out, specs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
    if command == "save":
        for spec in specs:
            save(spec, folder / f"{spec}.keras")
    np.savez(out, **{spec: continued(folder / f"{spec}.keras") for spec in specs})
