"""`keras-mtl benchmark` and `keras_mtl.benchmark.compare_methods`: which multi-task method, at which learning rate, for a model and its data.

What it does and prints is in `keras_mtl_cli.BENCHMARK_HELP` (`keras-mtl
benchmark --help`), kept beside the arguments so that help answers without
importing TensorFlow. Here: the default model, one run's training and
evaluation (`train_run`), the runs of a benchmark and its table (`compare_methods`,
which the command line calls too). Runs are trained by
`keras_mtl.benchmark.runner`, in this process or on Ray, and cached by
`keras_mtl.benchmark.cache`.

Backends: nothing here imports TensorFlow itself; the benchmark runs on
every backend keras_mtl has an engine for (TensorFlow and JAX). The data is
`tf.data` (`keras_mtl.datasets.MultiTaskData`, from arrays, tf.data or
tfds alike), which Keras reads on JAX too, so TensorFlow (the CPU package is
enough) must be installed for the data whatever the backend.
"""

import functools
import importlib
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

import keras_mtl
import keras_mtl_cli
from keras_mtl import datasets
from keras_mtl.benchmark import cache, report, runner

DATASETS = {
    "multi_mnist_5k": datasets.multi_mnist_5k,
    "multi_mnist_5k_sum": functools.partial(datasets.multi_mnist_5k, sum_task=True),
    "gradnorm_toy": datasets.gradnorm_toy,
    "qm9pack": datasets.load_qm9pack,
    "multi_mnist": functools.partial(datasets.load_multi_mnist, "multi_mnist"),
    "multi_fashion": functools.partial(datasets.load_multi_mnist, "multi_fashion"),
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


def training_batches(data, config):
    """The training pipeline of a run, shuffled with the run's seed.

    tf.data draws the order (each epoch's reshuffle included) from the global
    seed and this op seed; `train_run` sets the global seed from the run's
    seed first, so the order depends on the seed only, not on the method nor
    on what ran before in the process: the runs of one seed are paired, every
    method sees the same batches in the same order.
    """
    return data.train.shuffle(SHUFFLE_BUFFER, seed=config["seed"]).batch(config["batch_size"]).prefetch(2)


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
        for weights, (total, count), (last_total, last_count) in zip(self.weights.values(), sums, self._sums):
            weights.append((total - last_total) / (count - last_count))
        self._sums = sums


def _metric_name(task, tasks):
    """The name Keras logs a task's metric under: prefixed by the output's name, except for a single-output model."""
    return f"{task}_{tasks[task].metric}" if len(tasks) > 1 else tasks[task].metric


def run_data(config, data):
    """The data a run trains on: all of it, or a single-task baseline's one task."""
    if config["method_id"] == report.SINGLE_TASK:
        return data.select_tasks([config["method_kwargs"]["task"]])
    return data


def train_run(config, data, model_builder=build_model, callbacks=()):
    """Trains one run and returns its result dict (see `keras_mtl.benchmark.report`).

    The seed fixes the initial weights (set before the model is built) and
    the data order (`training_batches`): runs of one seed are paired. An
    optional `width` (passed to the model builder) and `weight_decay`
    (Adam's decoupled decay, AdamW) in `config` change the model and the
    optimizer. Test metrics come from `model.evaluate`; the validation
    metrics, which choose the learning rate and the method's settings, are
    the last epoch's.
    """
    keras.utils.set_random_seed(config["seed"])
    data = run_data(config, data)
    tasks = data.tasks
    # `width` and `weight_decay` are set by `keras-mtl study` only; the benchmark's configs
    # leave them out, so that its cached runs keep their names.
    model = model_builder(data, tasks, **({"width": config["width"]} if "width" in config else {}))
    model.compile(
        keras.optimizers.Adam(config["learning_rate"], weight_decay=config.get("weight_decay")),
        loss=make_method(config, data.losses()),
        metrics=data.metrics(),
    )
    timer, recorder = _StepTimer(), _WeightRecorder()
    diverged = _fit(model, data, config, [timer, recorder, *callbacks])
    history = model.history.history  # the epochs that finished, also when one diverged
    validation_curves = {name: history.get(f"val_{_metric_name(name, tasks)}", []) for name in tasks}
    if diverged:
        test = validation = {name: math.nan for name in tasks}
    else:
        logs = model.evaluate(data.test.batch(EVALUATION_BATCH_SIZE), verbose=0, return_dict=True)
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


def _fit(model, data, config, callbacks):
    """Trains the run's model; returns None, or keras_mtl's message when training stopped on a non-finite value.

    A run that diverges (a non-finite loss, weight or gradient, which
    keras_mtl refuses to apply: on TensorFlow an `InvalidArgumentError`, on
    JAX keras_mtl's `StepFault`, each with a "keras_mtl: ... not finite"
    line) is a result, with NaN metrics that rank it last, not a reason to
    stop the whole benchmark.
    """
    try:
        model.fit(
            training_batches(data, config),
            validation_data=data.validation.batch(EVALUATION_BATCH_SIZE),
            epochs=config["epochs"],
            verbose=0,
            shuffle=False,  # the pipeline shuffles, with the run's seed
            callbacks=callbacks,
        )
    except Exception as error:
        message = next(
            (line.strip() for line in str(error).splitlines() if "keras_mtl:" in line and "not finite" in line), None
        )
        if message is None:
            raise
        return message
    return None


class Trainer:
    """Trains runs of one model builder on its data sets, each loaded once per process; what Ray sends to its workers.

    Args:
        model_builder: `model_builder(data, tasks)`, see `build_model`.
        sources: `{config["dataset"]: MultiTaskData or a function returning one}`.
            To go to Ray workers both must pickle: functions do (cloudpickle),
            a `MultiTaskData` does when made from arrays.
    """

    def __init__(self, model_builder, sources):
        self.model_builder, self.sources, self._loaded = model_builder, dict(sources), {}

    def __getstate__(self):
        return {**self.__dict__, "_loaded": {}}

    def data(self, name):
        """The data set `name`, loaded on first use."""
        if name not in self._loaded:
            source = self.sources[name]
            loaded = source if isinstance(source, datasets.MultiTaskData) else source()
            if not isinstance(loaded, datasets.MultiTaskData):
                raise TypeError(
                    f"The data function of {name!r} returned a {type(loaded).__name__}, not a keras_mtl.datasets.MultiTaskData."
                )
            self._loaded[name] = loaded
        return self._loaded[name]

    def tasks(self, config):
        """The task names of a run (those of a failed run's NaN metrics)."""
        if config["method_id"] == report.SINGLE_TASK:
            return [config["method_kwargs"]["task"]]
        return list(self.data(config["dataset"]).tasks)

    def __call__(self, config, callbacks=()):
        return train_run(config, self.data(config["dataset"]), self.model_builder, callbacks)


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
        specs += [
            (f"scalarization({','.join(f'{w:g}' for w in p)})", "scalarization", {"weights": list(p)}) for p in points
        ]
    return specs


def usable_specs(specs, data, model_builder=build_model):
    """The specs whose method compiles on the data's model; prints a note for each method left out."""
    kept, skipped = [], set()
    for spec in specs:
        try:
            model_builder(data, data.tasks).compile(
                "adam", loss=make_method({"method_id": spec[1], "method_kwargs": spec[2]}, data.losses())
            )
            kept.append(spec)
        except (TypeError, ValueError) as error:
            if spec[0] not in skipped:
                print(f"note: skipping {spec[0]}: it does not build from the losses alone ({error})")
            skipped.add(spec[0])
    return kept


def load_data(name, max_examples=None):
    """The built-in data set `name` (`DATASETS`), each split cut to its first `max_examples` examples when given."""
    data = DATASETS[name]()
    return data if max_examples is None else data.take(max_examples)


def load_reference(reference, option):
    """The function a `module:function` reference names (`my_package.models:build`), the current folder importable.

    Raises:
        SystemExit: naming the problem, when the module or function is missing.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise SystemExit(
            f"keras-mtl benchmark: error: {option} {reference!r} must be module:function, e.g. my_package.models:build"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.import_module(module_name)
    except ImportError as error:
        raise SystemExit(
            f"keras-mtl benchmark: error: {option} {reference!r}: cannot import {module_name}: {error}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise SystemExit(
                f"keras-mtl benchmark: error: {option} {reference!r}: {module_name} has no attribute {attribute!r}"
            )
        found = getattr(found, part)
    if not callable(found):
        raise SystemExit(f"keras-mtl benchmark: error: {option} {reference!r} is not a function")
    return found


def _reference_name(function):
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', type(function).__name__)}"


def _take(load, max_examples):
    return load().take(max_examples)


def _data_source(data, max_examples):
    """`(name, source)` of the `data` argument of `compare`: a built-in data set's name, a `MultiTaskData` or a function returning one."""
    if isinstance(data, str):
        if data not in DATASETS:
            raise ValueError(
                f"compare: unknown data set {data!r}{keras_mtl_cli.suggestion(data, DATASETS)}; built in: {', '.join(DATASETS)}; or pass a MultiTaskData or a function returning one."
            )
        return data, functools.partial(load_data, data, max_examples)
    if isinstance(data, datasets.MultiTaskData):
        return "data", data if max_examples is None else data.take(max_examples)
    if callable(data):
        return _reference_name(data), data if max_examples is None else functools.partial(_take, data, max_examples)
    raise TypeError(
        f"compare: data must be a keras_mtl.datasets.MultiTaskData, a function returning one, or a built-in data set's name; got {type(data).__name__}."
    )


def compare_methods(
    build_model=build_model,
    data="multi_mnist_5k_sum",
    *,
    methods=None,
    seeds=2,
    learning_rates=(1e-3,),
    temperatures=keras_mtl_cli.TEMPERATURES,
    epochs=5,
    batch_size=64,
    scalarization_grid=False,
    max_examples=None,
    output="benchmark_results",
    name=None,
    ray=False,
    ray_address=None,
    cpus_per_run=1,
    gpus_per_run=0,
    tensorboard=None,
    progress=True,
):
    """Benchmarks multi-task methods on a model and its data; returns the table as a `pandas.DataFrame`.

    Trains every method × seed × learning rate (× UW-SO temperature), and one
    single-task baseline per task with the same architecture
    (`build_model(data, {task: spec})`), then compares them as `keras-mtl
    benchmark` does: runs paired by seed, the learning rate and temperature
    chosen on validation Δm%, test metrics, Δm% against single-task
    training, the difference from equal weighting with its paired t interval
    and a verdict, the mean rank, the time per step. Writes
    OUTPUT/results.csv, results.json and the plots; every finished run is
    cached under OUTPUT/runs, so calling again with the same arguments
    resumes where an interrupted call stopped.

    >>> table = keras_mtl.benchmark.compare_methods(build, data, methods=["ew", "uw", "pcgrad"], seeds=3, epochs=10)

    Args:
        build_model: `build_model(data, tasks)` returns an uncompiled keras_mtl
            model (e.g. `keras_mtl.MultiTaskModel`) with one output per task
            of `tasks` (`{name: TaskSpec}`), named after it (`spec.head(name)`
            builds a suitable output layer). Default: a small CNN/MLP
            (`keras_mtl.benchmark.compare.build_model`).
        data: a `keras_mtl.datasets.MultiTaskData` (from arrays, tf.data or
            tfds, each task with its loss, metric and direction), a function
            returning one, or a built-in data set's name (`DATASETS`). Ray
            workers get the function (a `MultiTaskData` only when made from
            arrays: tf.data pipelines do not pickle).
        methods: method ids (`keras_mtl.available()`); default
            `keras_mtl_cli.DEFAULT_METHODS`.
        seeds: paired seeds per setting, 0 .. seeds-1 (intervals need 2).
        learning_rates, temperatures: grids, each method keeping its best
            setting by validation Δm% (temperatures: UW-SO's).
        epochs, batch_size: every run's training.
        scalarization_grid: also train the scalarization grid's points.
        max_examples: cut every split to this many examples.
        output: folder of the results, the plots and the cached runs.
        name: the data's name in the run configurations (so in the cache):
            default the built-in name, the function's `module:name`, or "data"
            for a `MultiTaskData` (name it when you benchmark several).
        ray: train the runs in parallel as Ray tasks (`pip install
            'keras_mtl[ray]'`) on a local Ray instance, or on the cluster at
            `ray_address`, each run reserving `cpus_per_run` CPUs and
            `gpus_per_run` GPUs; an instance `ray.init` already started is
            used as it is.
        tensorboard: a folder for each run's TensorBoard logs (runs trained in
            this process).
        progress: show the `rich` progress display.

    Returns:
        A `pandas.DataFrame`, one row per method after the single-task row;
        the columns of results.csv.

    Raises:
        keras_mtl.benchmark.runner.Interrupted: on Ctrl-C (a
            `KeyboardInterrupt`), after saying which runs are kept; calling
            again resumes.
    """
    import pandas

    options = dict(locals())
    return pandas.DataFrame(_benchmark(options.pop("build_model"), options.pop("data"), options, resume="call")["rows"])


def _benchmark(model_builder, data, options, resume="command"):
    """`compare` without the DataFrame; returns `{"rows", "trained", "output"}`."""
    default_name, source = _data_source(data, options["max_examples"])
    name = options["name"] or default_name
    trainer = Trainer(model_builder, {name: source})
    loaded = trainer.data(name)
    methods = list(options["methods"] or [m for m in keras_mtl_cli.DEFAULT_METHODS if m in keras_mtl.available()])
    unknown = [m for m in methods if m not in keras_mtl.available()]
    if unknown:
        raise ValueError(
            f"compare: unknown method id {unknown[0]!r}{keras_mtl_cli.suggestion(unknown[0], keras_mtl.available())}; known: {' '.join(keras_mtl.available())}"
        )
    tasks = list(loaded.tasks)
    base = {
        "dataset": name,
        "max_examples": options["max_examples"],
        "epochs": options["epochs"],
        "batch_size": options["batch_size"],
    }
    if model_builder is not build_model:
        base["model"] = _reference_name(model_builder)
    baseline_specs = [(f"{report.SINGLE_TASK}:{t}", report.SINGLE_TASK, {"task": t}) for t in tasks]
    specs = usable_specs(
        method_specs(methods, options["temperatures"], options["scalarization_grid"], tasks), loaded, model_builder
    )
    if not specs:
        raise SystemExit(f"keras-mtl benchmark: error: none of the methods {methods} builds on {name}.")
    configs = [
        {**base, "label": label, "method_id": method_id, "method_kwargs": kwargs, "seed": seed, "learning_rate": lr}
        for label, method_id, kwargs in baseline_specs + specs
        for lr in options["learning_rates"]
        for seed in range(options["seeds"])
    ]
    output = Path(options["output"])
    folder = output / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    ray = (
        runner.RayOptions(options["ray_address"], options["cpus_per_run"], options["gpus_per_run"])
        if options["ray"] or options["ray_address"]
        else None
    )
    tensorboard = options["tensorboard"]
    callbacks = (
        (
            lambda config: [
                keras.callbacks.TensorBoard(log_dir=str(Path(tensorboard) / cache.run_path(folder, config).stem))
            ]
        )
        if tensorboard
        else None
    )
    print(f"{name}: ", end="")
    results, trained = runner.execute(
        configs, folder, trainer, ray=ray, progress=options["progress"], callbacks=callbacks, resume=resume
    )
    return {"rows": _report(options, loaded, results, output), "trained": trained, "output": output}


def run(args):
    """Runs the benchmark of parsed `keras-mtl benchmark` arguments (`keras_mtl_cli.parse`) through `compare`'s code.

    Returns:
        `{"rows": table rows, "trained": runs trained now, "output": folder}`.
    """
    model_builder = load_reference(args.model, "--model") if args.model else build_model
    data = load_reference(args.data, "--data") if args.data else args.dataset
    options = {
        "methods": args.methods,
        "seeds": args.seeds,
        "learning_rates": args.learning_rates,
        "temperatures": args.temperatures,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "scalarization_grid": args.scalarization_grid == "on",
        "max_examples": args.max_examples,
        "output": args.output,
        "name": None,
        "ray": args.ray,
        "ray_address": args.ray_address,
        "cpus_per_run": args.cpus_per_run,
        "gpus_per_run": args.gpus_per_run,
        "tensorboard": args.tensorboard,
        "progress": True,
    }
    return _benchmark(model_builder, data, options)


def _report(options, data, results, output):
    """Prints the table and writes the CSV, the JSON and the plots; returns the table rows."""
    learning_rates, temperatures = options["learning_rates"], options["temperatures"]
    baselines = [r for r in results if r["config"]["method_id"] == report.SINGLE_TASK]
    runs = [r for r in results if r["config"]["method_id"] != report.SINGLE_TASK]
    higher = {name: spec.higher_is_better for name, spec in data.tasks.items()}
    rows = report.summarize(runs, baselines, higher)
    metrics = ", ".join(f"{t}: {s.metric}" for t, s in data.tasks.items())
    grids = [f"learning rate from {' '.join(f'{lr:g}' for lr in learning_rates)}"]
    if any(r["config"]["method_id"] == "uw_so" for r in runs):
        grids.append(f"UW-SO temperature from {' '.join(f'{t:g}' for t in temperatures)}")
    print(
        f"\nTest metrics ({metrics}), mean ± sample std (ddof 1) over {options['seeds']} seeds; Δm% against single-task training (negative: better);"
        f"\nvs EW: the difference in Δm% from equal weighting, paired by seed, with its {report.CONFIDENCE:.0%} t interval;"
        f"\nchosen on validation Δm%: {'; '.join(grids)}."
    )
    report.print_table(report.benchmark_table(rows, list(data.tasks)))
    for run in results:
        if run.get("diverged"):
            print(f"note: {runner.run_name(run['config'])} diverged: {run['diverged']}")
        if run.get("error"):
            print(
                f"note: {runner.run_name(run['config'])} failed (not cached: the next invocation tries it again): {run['error']}"
            )
    report.write_csv(rows, output / "results.csv")
    report.write_json(rows, results, output / "results.json")
    # The curves of the runs that trained (a failed run has none).
    chosen = [r for r in _first_seed_runs(rows, runs) if not r.get("error")]
    plots = ["metrics.png"]
    report.plot_metrics(rows, list(data.tasks), higher, output / "metrics.png")
    weighted = [r for r in chosen if r["config"]["method_id"] != "scalarization"]
    if weighted:
        report.plot_weights(weighted, output / "weights.png")
        plots.insert(0, "weights.png")
    if chosen:
        report.plot_validation(chosen, data.tasks, output / "validation.png")
        plots.insert(-1, "validation.png")
    print(f"Wrote {output}/results.csv, results.json, {', '.join(plots)}.")
    return rows


def _first_seed_runs(rows, runs):
    """Each row's run of its first seed at its chosen setting."""
    chosen = {(row["method"], row["learning_rate"], row["tuned"]) for row in rows}
    first = min(r["config"]["seed"] for r in runs)
    return [
        r
        for r in runs
        if r["config"]["seed"] == first
        and (r["config"]["label"], r["config"]["learning_rate"], report.tuned_text(r, runs)) in chosen
    ]
