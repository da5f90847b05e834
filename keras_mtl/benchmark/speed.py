"""`keras-mtl speed`: the time of one training step of every method, relative to equal weighting.

What it prints is in `keras_mtl_cli.SPEED_HELP` (`keras-mtl speed --help`).
A step time is the fastest of 5 repeats of `--steps` calls of the model's
compiled train step, after a warm-up that traces it (`fit`'s own per-call
overhead is left out).

`× expected` divides the ratio by the cost the passes alone imply, counting a
backward pass as two forward passes (so one plain step costs 3): `(1+2K)/3`
for K backward passes, 2 for SAM on a loss weighting (a second forward and
backward pass), `(1+2K)/3 + K` for per-task SAM (K more of each).

SAM rows are `sam` (SAM on equal weighting) and `sam+ID` (F-MTL with the
gradient method ID; `sam+ID:naive` for the naive combination).
"""

import time

import keras
import numpy as np
import tensorflow as tf
from rich.console import Console
from rich.table import Table

import keras_mtl
import keras_mtl_cli
from keras_mtl.benchmark import report
from keras_mtl.flat import SAM
from keras_mtl.gradients import GradientMethod

INPUT_SHAPES = {"mlp": (128,), "cnn": (28, 28, 1)}


def _model(kind, num_tasks, representation):
    """An MLP (2 x 512 units on 128 features) or a small CNN (28 x 28 images), a 10-class head per task."""
    inputs = keras.Input(INPUT_SHAPES[kind])
    if kind == "mlp":
        hidden = keras.layers.Dense(512, activation="relu")(inputs)
        hidden = keras.layers.Dense(512, activation="relu", name="representation")(hidden)
    else:
        hidden = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Conv2D(32, 3, activation="relu")(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Dense(64, activation="relu", name="representation")(keras.layers.Flatten()(hidden))
    outputs = {f"task_{k:02d}": keras.layers.Dense(10, name=f"task_{k:02d}")(hidden) for k in range(num_tasks)}
    return keras_mtl.MultiTaskModel(inputs, outputs, representation="representation" if representation else None)


def step_time(method_id, kind, num_tasks, representation=False, steps=20, repeats=5, batch_size=128, status=None):
    """Seconds per training step of `method_id` on a fixed batch (`status`: a `rich` status line to show it on)."""
    if status is not None:
        status.update(f"timing {method_id} ({kind}, {'representation' if representation else 'parameters'}, K={num_tasks})")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *INPUT_SHAPES[kind])).astype("float32")
    y = {f"task_{k:02d}": rng.integers(0, 10, size=(batch_size,)) for k in range(num_tasks)}
    data = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
    model = _model(kind, num_tasks, representation)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.01), loss=make_method(method_id, loss))
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # builds and traces the step
    batches = iter(data)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            logs = model.train_function(batches)
        keras.tree.map_structure(np.asarray, logs)  # waits for the last step
        timings.append((time.perf_counter() - start) / steps)
    # The fastest repeat: the least disturbed by the rest of the machine.
    return min(timings)


def make_method(spec, loss):
    """A method from a registry id, or from `sam+ID[:naive]` (per-task SAM around ID)."""
    if spec.startswith("sam+"):
        inner, _, variant = spec[len("sam+") :].partition(":")
        return SAM(loss, method=inner, variant=variant or "fmtl")
    method = keras_mtl.get(spec, loss)
    if getattr(method, "main_task", False) is None:
        # Auxiliary-task methods (HydaLearn, GCosSim): the first task is the main one.
        method = type(method)(loss, main_task="task_00")
    return method


def _balances_gradients(method):
    """Whether the method, or the one SAM wraps, combines per-task gradients."""
    return isinstance(method.method if isinstance(method, SAM) else method, GradientMethod)


def _runs_on_representation(method_id):
    """Gradient methods, but not SAM nor exact look-ahead methods: they move parameters."""
    method = make_method(method_id, "mse")
    return isinstance(method, GradientMethod) and not method.needs_losses_after


def _expected_cost(method, num_tasks):
    """Step cost implied by the passes alone, in plain steps (see the module docstring)."""
    backward = (1 + 2 * num_tasks) / 3
    if isinstance(method, SAM):
        return backward + num_tasks if _balances_gradients(method) else 2.0
    return backward if _balances_gradients(method) else None


def time_rows(models, task_counts, representation_task_counts, methods, steps, status=None):
    """The table's rows: every method on every model and task count, then in representation mode."""
    rows = []

    def timed(method_id, kind, num_tasks, representation=False):
        return step_time(method_id, kind, num_tasks, representation=representation, steps=steps, status=status)

    for kind in models:
        for num_tasks in task_counts:
            base, mean = timed("ew", kind, num_tasks), timed("mean", kind, num_tasks)
            for method_id in methods:
                if make_method(method_id, "mse").min_tasks > num_tasks:
                    continue  # e.g. Krum, TrimmedMean: too few tasks to drop outliers from
                seconds = {"ew": base, "mean": mean}.get(method_id) or timed(method_id, kind, num_tasks)
                rows.append(_row(kind, "parameters", num_tasks, method_id, seconds, base, mean))
    for num_tasks in representation_task_counts:
        base, mean = timed("ew", "mlp", num_tasks), timed("mean", "mlp", num_tasks, representation=True)
        for method_id in methods:
            if _runs_on_representation(method_id) and make_method(method_id, "mse").min_tasks <= num_tasks:
                seconds = mean if method_id == "mean" else timed(method_id, "mlp", num_tasks, representation=True)
                rows.append(_row("mlp", "representation", num_tasks, method_id, seconds, base, mean))
    return rows


def _row(kind, mode, num_tasks, method_id, seconds, base, mean):
    method = make_method(method_id, "mse")
    gradient = _balances_gradients(method)
    expected = _expected_cost(method, num_tasks) if mode == "parameters" else None
    return {
        "model": kind,
        "mode": mode if gradient else "loss",
        "K": num_tasks,
        "method": method_id,
        "ms/step": 1000 * seconds,
        "× ew": seconds / base,
        "× expected": seconds / base / expected if expected else None,
        "× mean": seconds / mean if gradient else None,
    }


def speed_table(rows):
    """The rows as a `rich` table."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("model", "mode", "method") else "right")
    for row in rows:
        table.add_row(*("—" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value) for value in row.values()))
    return table


def run(args):
    """Times the methods of parsed `keras-mtl speed` arguments (`keras_mtl_cli.parse`), prints the table, returns its rows."""
    methods = args.methods or [m for m in keras_mtl.available() if m != "sam"] + list(keras_mtl_cli.DEFAULT_SAM_ROWS)
    with Console(stderr=True).status("timing") as status:
        rows = time_rows(args.models, args.tasks, args.representation_tasks, methods, args.steps, status=status)
    report.print_table(speed_table(rows))
    return rows
