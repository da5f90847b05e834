"""`keras-mtl speed`: the time of one training step of every method, relative to equal weighting.

What it prints is in `keras_mtl_cli.SPEED_HELP` (`keras-mtl speed --help`).
Backend-neutral: only public Keras and keras_mtl API, so it times whichever
backend `KERAS_BACKEND` names (shown in the table's title). A step time is the
fastest of 5 repeats of `--steps` calls of `model.train_on_batch` on one fixed
batch, after 3 untimed calls that build the model and trace or compile the
step. `train_on_batch` is the one per-step call that every backend offers with
the same signature; it includes Keras's own per-call work (resetting the
metrics, returning the logs as Python floats, which also waits for the step
on an asynchronous backend), which measured about what `fit` pays per step
(0.7-1 ms more than calling TensorFlow's compiled step directly, on the
project's 2-core CPU).

`× expected` divides the ratio by the cost the passes alone imply, counting a
backward pass as two forward passes (so one plain step costs 3): `(1+2K)/3`
for K backward passes, 2 for SAM on a loss weighting (a second forward and
backward pass), `(1+2K)/3 + K` for per-task SAM (K more of each), `2(1+2K)/3` for
the methods that draw several batches per step (MoDo, SDMGrad: the parts' passes
again cover the batch once).

SAM rows are `sam` (SAM on equal weighting) and `sam+ID` (F-MTL with the
gradient method ID; `sam+ID:naive` for the naive combination).

`--peer torchjd` times the same cells in PyTorch with TorchJD, in a child
process that runs `speed_torch.py` on the same batches (see its docstring),
and prints both sides' ratios to their own equal-weighting step and
keras_mtl's step time over TorchJD's.
"""

import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from rich.console import Console
from rich.table import Table

import keras_mtl
import keras_mtl_cli
from keras_mtl.benchmark import report

# The workloads of issue 9 (the peer times the same ones): an MLP 64 -> 512 -> 512
# on batches of 256, a CNN of two conv layers on 28 x 28 images in batches of 64.
INPUT_SHAPES = {"mlp": (64,), "cnn": (28, 28, 1)}
BATCH_SIZES = {"mlp": 256, "cnn": 64}
NUM_CLASSES = 10

# keras_mtl id -> (TorchJD class, its arguments), for `--peer torchjd`: keras_mtl's defaults where TorchJD
# has the same knob; "K" stands for the task count. `ew` is each side's own plain step, the baseline.
TORCHJD_METHODS = {
    "ew": ("scalarization.Sum", {}),
    "uw": ("scalarization.UW", {"shape": "K"}),
    "imtl_l": ("scalarization.IMTLL", {"shape": "K"}),
    "dwa": ("scalarization.DWA", {"temperature": 2.0}),
    "famo": ("scalarization.FAMO", {"shape": "K"}),
    "gls": ("scalarization.GeometricMean", {}),
    "stch": ("scalarization.STCH", {"mu": 1.0}),
    "mean": ("aggregation.Mean", {}),
    "upgrad": ("aggregation.UPGrad", {}),
    "mgda": ("aggregation.MGDA", {}),
    "pcgrad": ("aggregation.PCGrad", {}),
    "cagrad": ("aggregation.CAGrad", {"c": 0.4}),
    "nash_mtl": ("aggregation.NashMTL", {"n_tasks": "K", "max_norm": 1.0, "update_weights_every": 1}),
    "imtl_g": ("aggregation.IMTLG", {}),
    "dualproj": ("aggregation.DualProj", {}),
    "graddrop": ("aggregation.GradDrop", {}),
    "gradvac": ("aggregation.GradVac", {"beta": 0.01}),
    "aligned_mtl": ("aggregation.AlignedMTL", {}),
    "config": ("aggregation.ConFIG", {}),
    "fairgrad": ("aggregation.FairGrad", {"alpha": 1.0}),
    "krum": ("aggregation.Krum", {"n_byzantine": 0, "n_selected": 1}),
    "trimmed_mean": ("aggregation.TrimmedMean", {"trim_number": 1}),
}
# PyTorch's threads in the peer's process (issue 9 compares both sides on 2).
PEER_THREADS = 2


def _model(kind, num_tasks, representation, task_gradients="sequential"):
    """An MLP (2 x 512 units) or a small CNN (28 x 28 images), a 10-class head per task."""
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
    outputs = {f"task_{k:02d}": keras.layers.Dense(NUM_CLASSES, name=f"task_{k:02d}")(hidden) for k in range(num_tasks)}
    return keras_mtl.MultiTaskModel(inputs, outputs, representation="representation" if representation else None, task_gradients=task_gradients)


def batch(kind, num_tasks, seed=0):
    """One fixed batch of the workload: float32 inputs, integer labels (B, K) (the peer uses the same arrays)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH_SIZES[kind], *INPUT_SHAPES[kind])).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, size=(BATCH_SIZES[kind], num_tasks))


def step_time(method_id, kind, num_tasks, representation=False, steps=20, repeats=5, status=None, task_gradients="sequential"):
    """Seconds per `train_on_batch` of `method_id` on a fixed batch (`status`: a `rich` status line to show it on)."""
    if status is not None:
        status.update(f"timing {method_id} ({kind}, {'representation' if representation else 'parameters'}, K={num_tasks}, {task_gradients})")
    keras.utils.set_random_seed(0)
    x, labels = batch(kind, num_tasks)
    y = {f"task_{k:02d}": labels[:, k] for k in range(num_tasks)}
    model = _model(kind, num_tasks, representation, task_gradients)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.01), loss=make_method(method_id, loss))
    for _ in range(3):  # builds the model, traces (or compiles) the step, warms the caches
        model.train_on_batch(x, y)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)  # returns Python floats: it waits for the step, on any backend
        timings.append((time.perf_counter() - start) / steps)
    # The fastest repeat: the least disturbed by the rest of the machine.
    return min(timings)


def make_method(spec, loss):
    """A method from a registry id, or from `sam+ID[:naive]` (per-task SAM around ID)."""
    if spec.startswith("sam+"):
        inner, _, variant = spec[len("sam+") :].partition(":")
        return keras_mtl.SAM(loss, method=inner, variant=variant or "fmtl")
    method = keras_mtl.get(spec, loss)
    if getattr(method, "main_task", False) is None:
        # Auxiliary-task methods (HydaLearn, GCosSim): the first task is the main one.
        method = type(method)(loss, main_task="task_00")
    return method


def _balances_gradients(method):
    """Whether the method, or the one SAM wraps, combines per-task gradients (or penalises them: `gradient_penalty`)."""
    inner = method.method if isinstance(method, keras_mtl.SAM) else method
    return isinstance(inner, keras_mtl.GradientMethod) or inner.train_step_kind == "gradient_penalty"


def _runs_on_representation(method_id):
    """Gradient methods, but not SAM nor those that need the shared parameters (look-ahead, parameter-sized state, several batches)."""
    method = make_method(method_id, "mse")
    return isinstance(method, keras_mtl.GradientMethod) and not method.parameter_mode_only


def _expected_cost(method, num_tasks):
    """Step cost implied by the passes alone, in plain steps (see the module docstring)."""
    backward = (1 + 2 * num_tasks) / 3
    if isinstance(method, keras_mtl.SAM):
        return backward + num_tasks if _balances_gradients(method) else 2.0
    if method.train_step_kind == "gradient_penalty":
        return None  # a second-order backward pass: no pass count to compare with
    if not _balances_gradients(method):
        return None
    # Methods that draw several batches also pass over each part (together, the batch once more).
    return 2 * backward if method.batch_parts > 1 else backward


def time_rows(models, task_counts, representation_task_counts, methods, steps, status=None, compare_batched=False):
    """The table's rows: every method on every model and task count, then in representation mode.

    With `compare_batched`, every gradient method is timed again with
    `task_gradients="batched"`, and its row gets the ratio to the default
    sequential per-task gradients.
    """
    rows = []

    def timed(method_id, kind, num_tasks, representation=False):
        return step_time(method_id, kind, num_tasks, representation=representation, steps=steps, status=status)

    def add(kind, mode, num_tasks, method_id, seconds, base, mean):
        row = _row(kind, mode, num_tasks, method_id, seconds, base, mean)
        if compare_batched:
            batched = None
            if row["mode"] != "loss":
                batched = step_time(method_id, kind, num_tasks, mode == "representation", steps=steps, status=status, task_gradients="batched")
            row["batched / sequential"] = None if batched is None else batched / seconds
        rows.append(row)

    for kind in models:
        for num_tasks in task_counts:
            base, mean = timed("ew", kind, num_tasks), timed("mean", kind, num_tasks)
            for method_id in methods:
                if make_method(method_id, "mse").min_tasks > num_tasks:
                    continue  # e.g. Krum, TrimmedMean: too few tasks to drop outliers from
                seconds = {"ew": base, "mean": mean}.get(method_id) or timed(method_id, kind, num_tasks)
                add(kind, "parameters", num_tasks, method_id, seconds, base, mean)
    for num_tasks in representation_task_counts:
        base, mean = timed("ew", "mlp", num_tasks), timed("mean", "mlp", num_tasks, representation=True)
        for method_id in methods:
            if _runs_on_representation(method_id) and make_method(method_id, "mse").min_tasks <= num_tasks:
                seconds = mean if method_id == "mean" else timed(method_id, "mlp", num_tasks, representation=True)
                add("mlp", "representation", num_tasks, method_id, seconds, base, mean)
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


def peer_cells(rows):
    """The cells `(model, mode, K, method)` of the rows, and the `ew` cell each (model, K) needs as its baseline."""
    cells = [(row["model"], row["mode"], row["K"], row["method"]) for row in rows]
    baselines = [(kind, "loss", num_tasks, "ew") for kind, _, num_tasks, _ in cells]
    return list(dict.fromkeys(baselines + cells))


def peer_rows(rows, peer_seconds, peer_name):
    """keras_mtl's rows beside the peer's times of the same cells: each side over its own `ew`, and keras_mtl over the peer.

    Cells the peer did not time (no counterpart, or no `ew` baseline) are left out.
    """
    comparison = []
    for row in rows:
        cell = (row["model"], row["mode"], row["K"], row["method"])
        base = peer_seconds.get((row["model"], "loss", row["K"], "ew"))
        if cell not in peer_seconds or base is None:
            continue
        peer_ms = 1000 * peer_seconds[cell]
        comparison.append(
            {
                "model": row["model"],
                "mode": row["mode"],
                "K": row["K"],
                "method": row["method"],
                "keras_mtl ms": row["ms/step"],
                "keras_mtl × ew": row["× ew"],
                f"{peer_name} ms": peer_ms,
                f"{peer_name} × ew": peer_seconds[cell] / base,
                f"keras_mtl / {peer_name}": row["ms/step"] / peer_ms,
            }
        )
    return comparison


def peer_summary(comparison, peer_name):
    """One line: in how many cells keras_mtl's step is faster, its median ratio, and the cells whose machinery costs no more."""
    ratios = [row[f"keras_mtl / {peer_name}"] for row in comparison]
    methods = [row for row in comparison if row["method"] != "ew"]
    cheaper = sum(row["keras_mtl × ew"] <= row[f"{peer_name} × ew"] for row in methods)
    return (
        f"keras_mtl faster in {sum(ratio < 1 for ratio in ratios)} of {len(ratios)} cells, median keras_mtl / {peer_name} "
        f"{statistics.median(ratios):.2f}; machinery over its own ew no costlier than {peer_name}'s in {cheaper} of {len(methods)} method cells"
    )


def keras_title():
    """What ran the keras_mtl side: e.g. 'keras_mtl {__version__}, Keras 3.15.1, backend tensorflow 2.21.0'."""
    backend = keras.backend.backend()
    return f"keras_mtl {keras_mtl.__version__}, Keras {keras.__version__}, backend {backend} {importlib.import_module(backend).__version__}"


def speed_table(rows, title=None):
    """The rows as a `rich` table."""
    table = Table(title=title, box=None, pad_edge=False, header_style="bold")
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("model", "mode", "method") else "right")
    for row in rows:
        table.add_row(*("—" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value) for value in row.values()))
    return table


def missing_peer_packages():
    """The packages `--peer torchjd` needs that are not installed (found without importing them)."""
    return [name for name in ("torch", "torchjd") if importlib.util.find_spec(name) is None]


def time_peer(cells, steps, status=None):
    """TorchJD's `({cell: seconds}, versions, threads)` for the cells whose method it has, from `speed_torch.py` in a child process."""
    cells = [cell for cell in cells if cell[3] in TORCHJD_METHODS]
    arrays = {}
    for kind, _, num_tasks, _ in cells:
        arrays[f"x_{kind}_{num_tasks}"], arrays[f"labels_{kind}_{num_tasks}"] = batch(kind, num_tasks)
    methods = {cell[3]: TORCHJD_METHODS[cell[3]] for cell in cells}
    query = {"cells": cells, "methods": methods, "num_classes": NUM_CLASSES, "steps": steps, "threads": PEER_THREADS}
    with tempfile.TemporaryDirectory() as folder:
        request = Path(folder) / "request.npz"
        np.savez(request, query=json.dumps(query), **arrays)
        script = Path(__file__).with_name("speed_torch.py")
        with subprocess.Popen([sys.executable, str(script), str(request)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            progress = []
            for line in child.stderr:  # one line per timed cell (and whatever PyTorch warns)
                progress.append(line)
                if status is not None:
                    status.update(f"TorchJD: {line.strip()}")
            reply = child.stdout.read()
    if child.returncode != 0:
        raise RuntimeError(f"the TorchJD peer ({script}) failed with status {child.returncode}:\n{''.join(progress[-40:])}")
    reply = json.loads(reply)
    return dict(zip(cells, reply["seconds"])), reply["versions"], reply["threads"]


def run(args):
    """Times the methods of parsed `keras-mtl speed` arguments (`keras_mtl_cli.parse`), prints the tables, returns keras_mtl's rows.

    With `args.peer` the default methods are those TorchJD has too, and a
    second table compares the two sides cell by cell; without torch or
    torchjd installed, a note says so and keras_mtl's side runs alone.
    """
    console = Console(stderr=True)
    missing = missing_peer_packages() if args.peer else []
    if missing:
        # markup=False: rich would read "[torchjd]" as a style tag and drop it.
        console.print(f"note: --peer {args.peer} skipped: {' and '.join(missing)} not installed (pip install 'keras_mtl[torchjd]')", markup=False)
    peer = args.peer if args.peer and not missing else None
    default = list(TORCHJD_METHODS) if peer else [m for m in keras_mtl.available() if m != "sam"] + list(keras_mtl_cli.DEFAULT_SAM_ROWS)
    with console.status("timing") as status:
        rows = time_rows(args.models, args.tasks, args.representation_tasks, args.methods or default, args.steps, status=status, compare_batched=args.batched)
    report.print_table(speed_table(rows, title=keras_title()))  # first: the peer's failure would not lose it
    if peer:
        with console.status("timing TorchJD") as status:
            peer_seconds, peer_versions, threads = time_peer(peer_cells(rows), args.steps, status=status)
        comparison = peer_rows(rows, peer_seconds, peer)
        report.print_table(speed_table(comparison, title=f"{keras_title()} against {peer_versions}, {threads} threads"))
        print(peer_summary(comparison, peer))
    return rows
