"""`keras-mtl benchmark`: compare multi-task methods against single-task training and equal weighting.

What it does and prints is in `keras_mtl_cli.BENCHMARK_HELP` (`keras-mtl
benchmark --help`), kept beside the arguments so that help answers without
importing TensorFlow. Here: the model, one run's training and evaluation,
and the loop over runs with the cache (`keras_mtl.benchmark.cache`).
"""

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import keras_mtl
import keras_mtl_cli
from keras_mtl import datasets
from keras_mtl.benchmark import cache, report

DATASETS = {
    "multi_mnist_5k": datasets.multi_mnist_5k,
    "multi_mnist_5k_sum": lambda: datasets.multi_mnist_5k(sum_task=True),
    "gradnorm_toy": datasets.gradnorm_toy,
    "qm9pack": datasets.load_qm9pack,
    "multi_mnist": lambda: datasets.load_multi_mnist("multi_mnist"),
    "multi_fashion": lambda: datasets.load_multi_mnist("multi_fashion"),
    "celeb_a": datasets.load_celeb_a,
}
# Steps of the first epoch left out of the step time: they include tracing.
# The first step of every later epoch is left out too: it waits for the
# shuffle buffer to fill.
WARMUP_STEPS = 3
SHUFFLE_BUFFER = 4096
EVALUATION_BATCH_SIZE = 512


def build_model(data, tasks, width=1.0):
    """A small shared trunk (a CNN for images, else an MLP on standardised inputs) with one head per task in `tasks`.

    `width` multiplies the number of filters and units of every shared layer
    (16 and 32 filters, 128 and 64 units at width 1; at least 1 each).
    """

    def units(base):
        return max(1, round(base * width))

    inputs = keras.Input(data.input_shape)
    if len(data.input_shape) == 3:
        hidden = keras.layers.Conv2D(units(16), 3, activation="relu")(inputs)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Conv2D(units(32), 3, activation="relu")(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Flatten()(hidden)
    else:
        normalization = keras.layers.Normalization()
        normalization.adapt(data.train.map(lambda x, y: x).batch(4096))
        hidden = keras.layers.Dense(units(128), activation="relu")(normalization(inputs))
    hidden = keras.layers.Dense(units(64), activation="relu", name="representation")(hidden)
    return keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(hidden) for name, spec in tasks.items()})


def make_method(config, losses):
    """The multi-task method of a run configuration (a plain Scalarization for a single-task baseline)."""
    if config["method_id"] == report.SINGLE_TASK:
        return keras_mtl.Scalarization(losses)
    method = keras_mtl.get(config["method_id"], losses)
    return type(method)(losses, **config["method_kwargs"]) if config["method_kwargs"] else method


def run_tasks(config, data):
    """`{task: spec}` a run trains: every task, or a single-task baseline's one."""
    if config["method_id"] == report.SINGLE_TASK:
        return {config["method_kwargs"]["task"]: data.tasks[config["method_kwargs"]["task"]]}
    return dict(data.tasks)


def _select(tasks):
    return lambda x, y: (x, {name: y[name] for name in tasks})


def training_batches(data, tasks, config):
    """The training pipeline of a run, shuffled with the run's seed.

    tf.data draws the order (each epoch's reshuffle included) from the global
    seed and this op seed; `train_run` sets the global seed from the run's
    seed first, so the order depends on the seed only, not on the method nor
    on what ran before in the process: the runs of one seed are paired, every
    method sees the same batches in the same order.
    """
    return data.train.map(_select(tasks)).shuffle(SHUFFLE_BUFFER, seed=config["seed"]).batch(config["batch_size"]).prefetch(2)


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
    """Each training step's task weights, as the step used them.

    The model's weight trackers are means weighted by batch size: step b adds
    `n_b·w_b` to a tracker's total and `n_b` to its count, so
    `w_b = Δtotal / Δcount`, exact for a short last batch too (the running
    means in the logs would need inverting, which a short batch breaks).
    Keras resets the trackers before every epoch.
    """

    def on_train_begin(self, logs=None):
        self.weights = {task: [] for task in self.model.task_names}

    def on_epoch_begin(self, epoch, logs=None):
        self._sums = [(0.0, 0.0)] * len(self.weights)

    def on_train_batch_end(self, batch, logs=None):
        sums = [(float(t.total.numpy()), float(t.count.numpy())) for t in self.model.multi_task_state.weight_trackers]
        for (task, weights), (total, count), (last_total, last_count) in zip(self.weights.items(), sums, self._sums):
            weights.append((total - last_total) / (count - last_count))
        self._sums = sums


class RunProgress(keras.callbacks.Callback):
    """A `rich` progress bar over all the runs to train (advanced every step; on a terminal), and a line per finished run."""

    def __init__(self, num_runs, epochs):
        super().__init__()
        self.num_runs, self.epochs, self.runs_done = num_runs, epochs, 0
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("spent,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=Console(stderr=True),
            transient=True,  # the lines of the finished runs stay; the bar goes
        )
        self.task = self.bar.add_task("", total=num_runs * epochs)

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc_info):
        self.bar.stop()

    def start_run(self, label):
        self.label, self.started = f"run {self.runs_done + 1}/{self.num_runs} {label}", time.perf_counter()
        self.bar.update(self.task, description=self.label)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        fraction = (batch + 1) / self.params["steps"] if self.params.get("steps") else 0.0
        self.bar.update(self.task, completed=self.runs_done * self.epochs + self.epoch + fraction)

    def end_run(self):
        self.runs_done += 1
        self.bar.update(self.task, completed=self.runs_done * self.epochs)
        self.bar.console.print(f"{self.label}: {time.perf_counter() - self.started:.1f}s")


def _metric_name(task, tasks):
    """The name Keras logs a task's metric under: prefixed by the output's name, except for a single-output model."""
    return f"{task}_{tasks[task].metric}" if len(tasks) > 1 else tasks[task].metric


def train_run(config, data, callbacks=()):
    """Trains one run and returns its result dict (see `keras_mtl.benchmark.report`).

    The seed fixes the initial weights (set before the model is built) and
    the data order (`training_batches`): runs of one seed are paired. An
    optional `width` (`build_model`) and `weight_decay` (Adam's decoupled
    decay, AdamW) in `config` change the model and the optimizer.
    Test metrics come from `model.evaluate`; the validation metrics, which
    choose the learning rate and the method's settings, are the last epoch's.
    """
    keras.utils.set_random_seed(config["seed"])
    tasks = run_tasks(config, data)
    # `width` and `weight_decay` are set by `keras-mtl study` only; the benchmark's configs
    # leave them out, so that its cached runs keep their names.
    model = build_model(data, tasks, config.get("width", 1.0))
    model.compile(
        keras.optimizers.Adam(config["learning_rate"], weight_decay=config.get("weight_decay")),
        loss=make_method(config, {n: s.loss for n, s in tasks.items()}),
        metrics={name: [spec.metric] for name, spec in tasks.items()},
    )
    timer, recorder = _StepTimer(), _WeightRecorder()
    diverged = _fit(model, data, tasks, config, [timer, recorder, *callbacks])
    history = model.history.history  # the epochs that finished, also when one diverged
    validation_curves = {name: history.get(f"val_{_metric_name(name, tasks)}", []) for name in tasks}
    if diverged:
        test = validation = {name: math.nan for name in tasks}
    else:
        logs = model.evaluate(data.test.map(_select(tasks)).batch(EVALUATION_BATCH_SIZE), verbose=0, return_dict=True)
        test = {name: float(logs[_metric_name(name, tasks)]) for name in tasks}
        validation = {name: float(curve[-1]) for name, curve in validation_curves.items()}
    return {
        "config": config,
        "test": test,
        "validation": validation,
        "diverged": diverged,
        "seconds_per_step": timer.seconds_per_step,
        "history": {
            "weights": recorder.weights,
            "losses": {name: history.get(f"{name}_loss", []) for name in tasks},
            "validation": validation_curves,
        },
    }


def _fit(model, data, tasks, config, callbacks):
    """Trains the run's model; returns None, or keras_mtl's message when training stopped on a non-finite value.

    A run that diverges (a non-finite loss, weight or gradient, which
    keras_mtl refuses to apply) is a result, with NaN metrics that rank it
    last, not a reason to stop the whole benchmark.
    """
    try:
        model.fit(
            training_batches(data, tasks, config),
            validation_data=data.validation.map(_select(tasks)).batch(EVALUATION_BATCH_SIZE),
            epochs=config["epochs"],
            verbose=0,
            shuffle=False,  # the pipeline shuffles, with the run's seed
            callbacks=callbacks,
        )
    except tf.errors.InvalidArgumentError as error:
        message = next((line.strip() for line in str(error).splitlines() if "keras_mtl:" in line and "not finite" in line), None)
        if message is None:
            raise
        return message
    return None


def method_specs(methods, temperatures, scalarization_grid, task_names):
    """`(label, method_id, kwargs)` of every method setting to train; the settings of one label form its grid.

    UW-SO gets one setting per temperature; auxiliary-task methods (HydaLearn,
    GCosSim, OL-AUX, SLGrad) take the first task as their main one;
    `scalarization_grid` adds the grid's points, each its own row (the
    brute-force reference).
    """
    specs = []
    num_tasks = len(task_names)
    for method_id in methods:
        if method_id == "uw_so":
            specs += [("uw_so", "uw_so", {"temperature": t}) for t in temperatures]
        elif getattr(keras_mtl.get(method_id), "main_task", False) is None:
            specs.append((method_id, method_id, {"main_task": task_names[0]}))
        else:
            specs.append((method_id, method_id, {}))
    if scalarization_grid:
        points = keras_mtl.scalarization_grid(num_tasks)
        if not points:
            print(f"note: the scalarization grid has no points for {num_tasks} tasks.")
        specs += [(f"scalarization({','.join(f'{w:g}' for w in p)})", "scalarization", {"weights": list(p)}) for p in points]
    return specs


def usable_specs(specs, data):
    """The specs whose method compiles on the data's model; prints a note for each method left out."""
    kept, skipped = [], set()
    for spec in specs:
        try:
            build_model(data, data.tasks).compile("adam", loss=make_method({"method_id": spec[1], "method_kwargs": spec[2]}, data.losses()))
            kept.append(spec)
        except (TypeError, ValueError) as error:
            if spec[0] not in skipped:
                print(f"note: skipping {spec[0]}: it does not build from the losses alone ({error})")
            skipped.add(spec[0])
    return kept


def load_data(name, max_examples):
    """The data set `name`, each split cut to its first `max_examples` examples when given."""
    data = DATASETS[name]()
    if max_examples is None:
        return data
    cut = {split: getattr(data, split).take(max_examples) for split in ("train", "validation", "test")}
    return datasets.MultiTaskData(**cut, tasks=data.tasks, metadata=data.metadata)


def _tensorboard(args, path):
    """The TensorBoard callback of a run, logging to `--tensorboard`/RUN (none without the option)."""
    return [keras.callbacks.TensorBoard(log_dir=str(Path(args.tensorboard) / path.stem))] if args.tensorboard else []


def cached_results(configs, folder):
    """`(results, to_train)`: the usable cached result of each config, and the configs to train (a note for each unusable file)."""
    results, to_train = {}, []
    for config in configs:
        path = cache.run_path(folder, config)
        result, problem = cache.read(path, config)
        if problem:
            print(f"note: training {path} again: {problem}")
        if result is None:
            to_train.append(config)
        else:
            results[path] = result
    return results, to_train


def run(args):
    """Runs the benchmark of parsed `keras-mtl benchmark` arguments (`keras_mtl_cli.parse`).

    Returns:
        `{"rows": table rows, "trained": runs trained now, "output": folder}`.
    """
    methods = args.methods or [m for m in keras_mtl_cli.DEFAULT_METHODS if m in keras_mtl.available()]
    data = load_data(args.dataset, args.max_examples)
    tasks = list(data.tasks)
    base = {"dataset": args.dataset, "max_examples": args.max_examples, "epochs": args.epochs, "batch_size": args.batch_size}
    baseline_specs = [(f"{report.SINGLE_TASK}:{t}", report.SINGLE_TASK, {"task": t}) for t in tasks]
    specs = usable_specs(method_specs(methods, args.temperatures, args.scalarization_grid == "on", tasks), data)
    if not specs:
        raise SystemExit(f"keras-mtl benchmark: error: none of the methods {methods} builds on {args.dataset}.")
    configs = [
        {**base, "label": label, "method_id": method_id, "method_kwargs": kwargs, "seed": seed, "learning_rate": lr}
        for label, method_id, kwargs in baseline_specs + specs
        for lr in args.learning_rates
        for seed in range(args.seeds)
    ]
    folder = Path(args.output) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    results, to_train = cached_results(configs, folder)
    print(f"{args.dataset}: {len(configs)} runs, {len(results)} already done in {folder}, {len(to_train)} to train.")
    with RunProgress(len(to_train), args.epochs) as progress:
        for config in to_train:
            path = cache.run_path(folder, config)
            progress.start_run(run_name(config))
            results[path] = train_run(config, data, callbacks=[progress, *_tensorboard(args, path)])
            cache.save(path, results[path])
            progress.end_run()
    rows = _report(args, data, [results[cache.run_path(folder, c)] for c in configs])
    return {"rows": rows, "trained": len(to_train), "output": Path(args.output)}


def run_name(config):
    """A run for people: its row label, method arguments, seed and learning rate."""
    arguments = "" if config["method_id"] == report.SINGLE_TASK else "".join(f"{name}={value} " for name, value in config["method_kwargs"].items())
    return f"{config['label']} {arguments}seed {config['seed']} lr {config['learning_rate']:g}"


def _report(args, data, results):
    """Prints the table and writes the CSV, the JSON and the plots; returns the table rows."""
    baselines = [r for r in results if r["config"]["method_id"] == report.SINGLE_TASK]
    runs = [r for r in results if r["config"]["method_id"] != report.SINGLE_TASK]
    higher = {name: spec.higher_is_better for name, spec in data.tasks.items()}
    rows = report.summarize(runs, baselines, higher)
    metrics = ", ".join(f"{t}: {s.metric}" for t, s in data.tasks.items())
    grids = [f"learning rate from {' '.join(f'{lr:g}' for lr in args.learning_rates)}"]
    if any(r["config"]["method_id"] == "uw_so" for r in runs):
        grids.append(f"UW-SO temperature from {' '.join(f'{t:g}' for t in args.temperatures)}")
    print(
        f"\nTest metrics ({metrics}), mean ± std over {args.seeds} seeds; Δm% against single-task training (negative: better);"
        f"\nvs EW: the difference in Δm% from equal weighting, paired by seed, with its {report.CONFIDENCE:.0%} t interval;"
        f"\nchosen on validation Δm%: {'; '.join(grids)}."
    )
    report.print_table(report.benchmark_table(rows, list(data.tasks)))
    for run in results:
        if run.get("diverged"):
            print(f"note: {run_name(run['config'])} diverged: {run['diverged']}")
    output = Path(args.output)
    report.write_csv(rows, output / "results.csv")
    report.write_json(rows, results, output / "results.json")
    chosen = _first_seed_runs(rows, runs)
    report.plot_weights([r for r in chosen if r["config"]["method_id"] != "scalarization"], output / "weights.png")
    report.plot_validation(chosen, data.tasks, output / "validation.png")
    report.plot_metrics(rows, list(data.tasks), higher, output / "metrics.png")
    print(f"Wrote {output}/results.csv, results.json, weights.png, validation.png, metrics.png.")
    return rows


def _first_seed_runs(rows, runs):
    """Each row's run of its first seed at its chosen setting."""
    chosen = {(row["method"], row["learning_rate"], row["tuned"]) for row in rows}
    first = min(r["config"]["seed"] for r in runs)
    return [r for r in runs if r["config"]["seed"] == first and (r["config"]["label"], r["config"]["learning_rate"], report.tuned_text(r, runs)) in chosen]
