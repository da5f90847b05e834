"""`keras-mtl speed`: the time of one training step of every method, relative to equal weighting, and what `fit` costs.

What it prints is in `keras_mtl_cli.SPEED_HELP` (`keras-mtl speed --help`).
Backend-neutral: only public Keras and keras_mtl API, so it times whichever
backend `KERAS_BACKEND` names (shown in the table's title).

A cell is `(model, mode, K, method)`. Each library that has the cell has a
timer for it: keras_mtl's (`KerasTimer` on a `MultiTaskModel`), stock
Keras's for the same network without keras_mtl (mode `stock`: the floor of
`fit`), TorchJD's (`--peer torchjd`, `PeerTimer`) and keras_mtl's with
`task_gradients="batched"` (`--batched`). The timers run interleaved, cell by
cell and library by library within each of `--repeats` rounds
(`schedule`), so that the machine's drift hits every library and cell alike;
a figure is the median of the rounds, its spread `(max - min) / median`.
The rounds run within each (model, K) (`groups`), whose models are then
freed: memory stays that of one group, and every ratio in a row (to `ew`,
`mean`, stock Keras, the peer) is taken within its group.

- compiled step: one round times `--steps` calls of `model.train_on_batch`
  on one fixed batch (Keras's per-call work included: resetting the metrics,
  returning the logs as Python floats, which waits for the step on an
  asynchronous backend); the timer's first call, before the rounds, builds
  the model and traces or compiles the step, followed by 2 untimed calls.
- compile: the first call's seconds minus the median step.
- fit: one `fit` epoch of `--fit-steps` batches (the fixed batch repeated,
  no shuffling, `verbose=0`) per round, per `--steps-per-execution` value,
  each on its own compiled model, after one untimed epoch; seconds per step.
  `× keras` divides it by the stock Keras model's `fit` of the same shape
  (same batches, SGD(0.01), the summed losses), as a user would pay.

Load. The 1-minute load average (`os.getloadavg`) is read before and after
every timed round; a row shows the highest its cell saw. A cell is `busy`
when that exceeds `busy_threshold`: by default one runnable thread for the
benchmark itself (its process runs one step at a time; the issue's quiet run
on 2 cores read at most 1.4) plus half the cores for everything else
(`--busy-load` sets another). A table with a busy cell says so in its title
and is not for publication; `--require-quiet` aborts at the first busy
reading instead.

`× expected` divides the ratio by the cost the passes alone imply, counting a
backward pass as two forward passes (so one plain step costs 3): `(1+2K)/3`
for K backward passes, 2 for SAM on a loss weighting (a second forward and
backward pass), `(1+2K)/3 + K` for per-task SAM (K more of each), `2(1+2K)/3` for
the methods that draw several batches per step (MoDo, SDMGrad: the parts' passes
again cover the batch once).

SAM rows are `sam` (SAM on equal weighting) and `sam+ID` (F-MTL with the
gradient method ID; `sam+ID:naive` for the naive combination).

`--peer torchjd` times the same cells in PyTorch with TorchJD, in a child
process that serves `speed_torch.py` on the same batches (see its
docstring), and prints both sides' ratios to their own equal-weighting step
and keras_mtl's step time over TorchJD's. Under `KERAS_BACKEND=torch` both
sides run PyTorch's kernels, with the same number of threads.
"""

import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
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
# PyTorch's threads in the peer's process (issue 9 compares both sides on 2), and in keras_mtl's under KERAS_BACKEND=torch.
PEER_THREADS = 2
# The libraries a cell can be timed by (the rows' sources), in the order each round times them.
KERAS_MTL, STOCK, BATCHED = "keras_mtl", "keras", "keras_mtl batched"


def busy_threshold(cores=None):
    """The 1-minute load average above which a cell is `busy`: one thread for the benchmark, plus half the cores."""
    return 1 + 0.5 * (cores or os.cpu_count() or 1)


def read_load():
    """The 1-minute load average."""
    return os.getloadavg()[0]


class MachineBusy(RuntimeError):
    """`--require-quiet`: a load reading above the threshold."""


def _network(kind, num_tasks):
    """The inputs and `{task: logits}` of an MLP (2 x 512 units) or a small CNN (28 x 28 images), a 10-class head per task."""
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
    return inputs, {
        f"task_{k:02d}": keras.layers.Dense(NUM_CLASSES, name=f"task_{k:02d}")(hidden) for k in range(num_tasks)
    }


def _model(kind, num_tasks, representation, task_gradients="sequential"):
    """The workload as a `MultiTaskModel` (uncompiled)."""
    inputs, outputs = _network(kind, num_tasks)
    return keras_mtl.MultiTaskModel(
        inputs, outputs, representation="representation" if representation else None, task_gradients=task_gradients
    )


def batch(kind, num_tasks, seed=0):
    """One fixed batch of the workload: float32 inputs, integer labels (B, K) (the peer uses the same arrays)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH_SIZES[kind], *INPUT_SHAPES[kind])).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, size=(BATCH_SIZES[kind], num_tasks))


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def keras_mtl_builder(cell, task_gradients="sequential"):
    """`steps_per_execution -> compiled MultiTaskModel` of a cell, with its method and SGD(0.01)."""
    kind, mode, num_tasks, method_id = cell

    def build(steps_per_execution):
        keras.utils.set_random_seed(0)
        model = _model(kind, num_tasks, mode == "representation", task_gradients)
        model.compile(
            keras.optimizers.SGD(0.01), loss=make_method(method_id, _loss()), steps_per_execution=steps_per_execution
        )
        return model

    return build


def stock_builder(cell):
    """`steps_per_execution -> compiled keras.Model` of the same network, its K losses summed, SGD(0.01): no keras_mtl."""
    kind, _, num_tasks, _ = cell

    def build(steps_per_execution):
        keras.utils.set_random_seed(0)
        inputs, outputs = _network(kind, num_tasks)
        model = keras.Model(inputs, outputs)
        model.compile(
            keras.optimizers.SGD(0.01),
            loss={name: _loss() for name in outputs},
            steps_per_execution=steps_per_execution,
        )
        return model

    return build


class KerasTimer:
    """A cell's compiled step (`train_on_batch`) and `fit` per step under each `steps_per_execution`, on its fixed batch.

    `build(steps_per_execution)` returns the compiled model. `prepare` times
    the first call (build, trace, compile), then warms up; `sample` times one
    round. The model with `steps_per_execution=1` serves `train_on_batch` too.
    """

    def __init__(self, build, cell, steps, fit_steps, executions):
        kind, _, num_tasks, _ = cell
        self.build, self.steps, self.fit_steps, self.executions = build, steps, fit_steps, executions
        self.x, labels = batch(kind, num_tasks)
        self.y = {f"task_{k:02d}": labels[:, k] for k in range(num_tasks)}
        self.fit_x = np.concatenate([self.x] * fit_steps) if fit_steps else None
        self.fit_y = (
            {name: np.concatenate([value] * fit_steps) for name, value in self.y.items()} if fit_steps else None
        )

    def prepare(self):
        """Builds the models; returns the seconds of the first `train_on_batch` (building and compiling the step)."""
        self.models = {1: self.build(1)}
        start = time.perf_counter()
        self.models[1].train_on_batch(self.x, self.y)
        first = time.perf_counter() - start
        for _ in range(2):
            self.models[1].train_on_batch(self.x, self.y)
        if self.fit_steps:
            for execution in self.executions:
                if execution not in self.models:
                    self.models[execution] = self.build(execution)
                self._fit(execution)  # compiles `fit`'s function for this steps_per_execution
        return first

    def _fit(self, execution):
        batch_size = len(self.x)
        start = time.perf_counter()
        self.models[execution].fit(self.fit_x, self.fit_y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return (time.perf_counter() - start) / self.fit_steps

    def sample(self):
        """One round: `{"step": seconds per train_on_batch, ("fit", spe): seconds per fit step}`."""
        model = self.models[1]
        start = time.perf_counter()
        for _ in range(self.steps):
            model.train_on_batch(self.x, self.y)  # returns Python floats: it waits for the step, on any backend
        times = {"step": (time.perf_counter() - start) / self.steps}
        if self.fit_steps:
            times.update({("fit", execution): self._fit(execution) for execution in self.executions})
        return times


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


def grid(models, task_counts, representation_task_counts, methods):
    """The cells `(model, mode, K, method)` to time, in order: per (model, K) the stock Keras network, `ew`, `mean` (when a gradient method needs it as a baseline), the methods; then representation mode (MLP).

    A method's mode is `loss` for a loss weighting; cells a method cannot
    run (too few tasks, representation mode for parameter-only methods) are
    left out.
    """
    cells = []

    def baselines(kind, num_tasks, mode):
        cells.extend([(kind, "stock", num_tasks, STOCK), (kind, "loss", num_tasks, "ew")])
        if mode == "representation" or any(_balances_gradients(make_method(m, "mse")) for m in methods):
            cells.append((kind, mode, num_tasks, "mean"))

    for kind in models:
        for num_tasks in task_counts:
            baselines(kind, num_tasks, "parameters")
            for method_id in methods:
                method = make_method(method_id, "mse")
                if method.min_tasks <= num_tasks:  # e.g. Krum, TrimmedMean: too few tasks to drop outliers from
                    cells.append((kind, "parameters" if _balances_gradients(method) else "loss", num_tasks, method_id))
    for num_tasks in representation_task_counts:
        baselines("mlp", num_tasks, "representation")
        cells.extend(
            ("mlp", "representation", num_tasks, m)
            for m in methods
            if _runs_on_representation(m) and make_method(m, "mse").min_tasks <= num_tasks
        )
    return list(dict.fromkeys(cells))


def schedule(entries, repeats):
    """The timing order: `(round, cell, library)`, every library of a cell right after the other, cell after cell, round after round.

    `entries`: `[(cell, [libraries that time it])]` in the table's order.
    Drift over the run then falls alike on each library of a cell (seconds
    apart) and on every cell (each round spans the grid).
    """
    return [
        (round_, cell, library) for round_ in range(repeats) for cell, libraries in entries for library in libraries
    ]


def groups(cells):
    """The cells by (model, K), in the order each first appears: the rounds of `schedule` run within a group."""
    grouped = defaultdict(list)
    for cell in cells:
        grouped[(cell[0], cell[2])].append(cell)
    return list(grouped.values())


def measure(timers, order, threshold, require_quiet=False, load=read_load, status=None):
    """Runs `order` (`schedule`) on `timers` (`{(cell, library): timer}`, each with `prepare()` and `sample()`).

    Returns `{(cell, library): {"first": s, "samples": [dicts of seconds], "load": highest reading}}`.
    With `require_quiet`, raises `MachineBusy` at the first load reading above `threshold`.
    """
    results = defaultdict(lambda: {"samples": [], "load": 0.0})

    def reading(cell, library):
        value = load()
        if require_quiet and value > threshold:
            raise MachineBusy(
                f"the machine is busy: the 1-minute load average is {value:.2f}, above {threshold:.2f}, at {library} {' '.join(map(str, cell))} "
                "(--require-quiet refuses to measure; wait for a quiet machine, or raise --busy-load)"
            )
        results[(cell, library)]["load"] = max(results[(cell, library)]["load"], value)

    for round_, cell, library in order:
        timer = timers[(cell, library)]
        if status is not None:
            status.update(f"round {round_ + 1}: {library} {' '.join(map(str, cell))}")
        reading(cell, library)
        if "first" not in results[(cell, library)]:
            results[(cell, library)]["first"] = timer.prepare()
        results[(cell, library)]["samples"].append(timer.sample())
        reading(cell, library)
    return dict(results)


def summary(result, key="step"):
    """(median, spread `(max - min) / median`) of one figure over a timer's rounds."""
    values = [sample[key] for sample in result["samples"]]
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median


def cell_loads(results):
    """`{cell: the highest load any library saw while timing it}`."""
    loads = defaultdict(float)
    for (cell, _), result in results.items():
        loads[cell] = max(loads[cell], result["load"])
    return loads


def rows_of(results, threshold, executions=(), compare_batched=False):
    """keras_mtl's table (and the stock Keras rows): one row per cell, from `measure`'s results."""
    loads = cell_loads(results)
    step = {cell: summary(result)[0] for (cell, library), result in results.items() if library in (KERAS_MTL, STOCK)}
    rows = []
    for (cell, library), result in results.items():
        if library not in (KERAS_MTL, STOCK):
            continue
        kind, mode, num_tasks, method_id = cell
        seconds, spread = summary(result)
        base = step[(kind, "loss", num_tasks, "ew")]
        mean = step.get((kind, mode, num_tasks, "mean"))
        method = None if library == STOCK else make_method(method_id, "mse")
        expected = _expected_cost(method, num_tasks) if method is not None and mode == "parameters" else None
        row = {
            "model": kind,
            "mode": mode,
            "K": num_tasks,
            "method": method_id,
            "ms/step": 1000 * seconds,
            "±%": 100 * spread,
            "compile s": result["first"] - seconds,
            "× ew": seconds / base,
            "× expected": seconds / base / expected if expected else None,
            "× mean": seconds / mean if mode in ("parameters", "representation") and mean else None,
        }
        stock = results.get(((kind, "stock", num_tasks, STOCK), STOCK))
        for execution in executions:
            fit = summary(result, ("fit", execution))[0]
            row[f"fit ms spe={execution}"] = 1000 * fit
            row[f"× keras spe={execution}"] = fit / summary(stock, ("fit", execution))[0] if stock else None
        if compare_batched:
            batched = results.get((cell, BATCHED))
            row["batched / sequential"] = summary(batched)[0] / seconds if batched else None
        row["load"] = loads[cell]
        row["busy"] = "busy" if loads[cell] > threshold else ""
        rows.append(row)
    return rows


def peer_rows(rows, peer_seconds, peer_name):
    """keras_mtl's rows beside the peer's times of the same cells: each side over its own `ew`, and keras_mtl over the peer.

    Cells the peer did not time (no counterpart, or no `ew` baseline) are
    left out; a row's `load` and `busy` are those of keras_mtl's row (the
    sides ran interleaved).
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
                **{key: row[key] for key in ("load", "busy") if key in row},
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


def conditions(rows, threshold, repeats, steps):
    """The title's second line: how the figures were taken, and whether the table is fit to publish."""
    line = f"median of {repeats} interleaved rounds of {steps} steps, ±% = (max - min) / median; load = 1-minute load average, busy above {threshold:.2f}"
    busy = sum(row["busy"] == "busy" for row in rows)
    if busy:
        line += f"\nBUSY: {busy} of {len(rows)} cells measured while the machine was busy: not for publication"
    return line


def speed_table(rows, title=None):
    """The rows as a `rich` table."""
    table = Table(title=title, box=None, pad_edge=False, header_style="bold")
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("model", "mode", "method", "busy") else "right")
    for row in rows:
        table.add_row(
            *(
                "—" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
                for value in row.values()
            )
        )
    return table


def missing_peer_packages():
    """The packages `--peer torchjd` needs that are not installed (found without importing them)."""
    return [name for name in ("torch", "torchjd") if importlib.util.find_spec(name) is None]


class PeerProcess:
    """The TorchJD side: `speed_torch.py` serving requests in a child process, on the batches of `cells`."""

    def __init__(self, cells, threads):
        self.folder = tempfile.TemporaryDirectory()
        arrays = {}
        for kind, _, num_tasks, _ in cells:
            arrays[f"x_{kind}_{num_tasks}"], arrays[f"labels_{kind}_{num_tasks}"] = batch(kind, num_tasks)
        batches = Path(self.folder.name) / "batches.npz"
        np.savez(batches, **arrays)
        self.script = Path(__file__).with_name("speed_torch.py")
        # Its stderr (PyTorch's warnings, a line per round) to a file: a full pipe would block it.
        self.log = open(Path(self.folder.name) / "stderr.txt", "w+")  # noqa: SIM115 (open for the child's lifetime; `close` closes it)
        self.child = subprocess.Popen(
            [sys.executable, str(self.script), str(batches)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        hello = self.ask({"threads": threads})
        self.versions, self.threads = hello["versions"], hello["threads"]

    def ask(self, request):
        self.child.stdin.write(json.dumps(request) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            self.child.wait()
            self.log.seek(0)
            raise RuntimeError(
                f"the TorchJD peer ({self.script}) failed with status {self.child.returncode}:\n{''.join(self.log.readlines()[-40:])}"
            )
        return json.loads(line)

    def close(self):
        self.child.stdin.close()
        self.child.wait()
        self.log.close()
        self.folder.cleanup()


class PeerTimer:
    """A cell timed by the peer process, with the same interface as `KerasTimer`."""

    def __init__(self, peer, cell, steps):
        self.peer, self.cell, self.steps = peer, list(cell), steps

    def prepare(self):
        return self.peer.ask({"prepare": self.cell, "spec": TORCHJD_METHODS[self.cell[3]], "num_classes": NUM_CLASSES})[
            "first"
        ]

    def sample(self):
        return {"step": self.peer.ask({"sample": self.cell, "steps": self.steps})["step"]}


def fit_executions(args, console=None):
    """The `steps_per_execution` values to time `fit` with: none without `--fit-steps`, only 1 where the backend allows no other."""
    if not args.fit_steps:
        return []
    if keras.backend.backend() == "torch" and any(execution != 1 for execution in args.steps_per_execution):
        # Keras 3.15's torch trainer raises "`steps_per_execution` must be 1 with the PyTorch backend".
        if console is not None:
            console.print(
                "note: fit is timed with steps_per_execution=1 only: Keras's PyTorch backend allows no other value"
            )
        return [1]
    return list(dict.fromkeys(args.steps_per_execution))


def timers_for(cells, args, executions, peer=None):
    """`(entries for schedule, {(cell, library): timer})` of the cells, for the libraries the arguments ask for."""
    entries, timers = [], {}
    for cell in cells:
        if cell[1] == "stock":
            libraries = {STOCK: KerasTimer(stock_builder(cell), cell, args.steps, args.fit_steps, executions)}
        else:
            libraries = {KERAS_MTL: KerasTimer(keras_mtl_builder(cell), cell, args.steps, args.fit_steps, executions)}
            if peer is not None and cell[3] in TORCHJD_METHODS:
                libraries[peer.name] = PeerTimer(peer.process, cell, args.steps)
            if args.batched and cell[1] != "loss":
                libraries[BATCHED] = KerasTimer(keras_mtl_builder(cell, "batched"), cell, args.steps, 0, [])
        entries.append((cell, list(libraries)))
        timers.update({(cell, library): timer for library, timer in libraries.items()})
    return entries, timers


class _Peer:
    def __init__(self, name, process):
        self.name, self.process = name, process


def run(args, load=read_load):
    """Times the cells of parsed `keras-mtl speed` arguments (`keras_mtl_cli.parse`), prints the tables, returns keras_mtl's rows.

    With `args.peer` the default methods are those TorchJD has too, and a
    second table compares the two sides cell by cell; without torch or
    torchjd installed, a note says so and keras_mtl's side runs alone.
    `load` reads the 1-minute load average (a test injects its own).
    """
    console = Console(stderr=True)
    missing = missing_peer_packages() if args.peer else []
    if missing:
        # markup=False: rich would read "[torchjd]" as a style tag and drop it.
        console.print(
            f"note: --peer {args.peer} skipped: {' and '.join(missing)} not installed (pip install 'keras_mtl[torchjd]')",
            markup=False,
        )
    peer_name = args.peer if args.peer and not missing else None
    default = (
        list(TORCHJD_METHODS)
        if peer_name
        else [m for m in keras_mtl.available() if m != "sam"] + list(keras_mtl_cli.DEFAULT_SAM_ROWS)
    )
    threshold = args.busy_load if args.busy_load is not None else busy_threshold()
    executions = fit_executions(args, console)
    cells = grid(args.models, args.tasks, args.representation_tasks, args.methods or default)
    peer = None
    if peer_name:
        if keras.backend.backend() == "torch":
            import torch  # only on the torch backend: the same threads on both sides

            torch.set_num_threads(PEER_THREADS)
        peer = _Peer(peer_name, PeerProcess([c for c in cells if c[3] in TORCHJD_METHODS], PEER_THREADS))
    results = {}
    try:
        with console.status("timing") as status:
            for group in groups(cells):
                # One (model, K) at a time: its models are freed before the next group's are built.
                entries, timers = timers_for(group, args, executions, peer)
                results.update(
                    measure(
                        timers, schedule(entries, args.repeats), threshold, args.require_quiet, load=load, status=status
                    )
                )
    except MachineBusy as busy:
        raise SystemExit(f"keras-mtl speed: {busy}") from None
    finally:
        if peer is not None:
            peer.process.close()
    results = {key: results[key] for cell in cells for key in results if key[0] == cell}  # the grid's order
    rows = rows_of(results, threshold, executions, args.batched)
    title = f"{keras_title()}\n{conditions(rows, threshold, args.repeats, args.steps)}"
    report.print_table(speed_table(rows, title=title))
    if peer is not None:
        peer_seconds = {cell: summary(result)[0] for (cell, library), result in results.items() if library == peer_name}
        comparison = peer_rows(rows, peer_seconds, peer_name)
        peer_title = f"{keras_title()} against {peer.process.versions}, {peer.process.threads} threads\n{conditions(comparison, threshold, args.repeats, args.steps)}"
        report.print_table(speed_table(comparison, title=peer_title))
        print(peer_summary(comparison, peer_name))
    return rows
