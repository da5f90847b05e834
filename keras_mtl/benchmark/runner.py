"""Training the runs of a benchmark or a study: in this process one after another, or in parallel as Ray tasks.

The driver (this process) keeps the cache and the results: it reads the
finished runs from the cache (`keras_mtl.benchmark.cache`), trains the
others, and saves each result the moment it arrives, so that a driver
stopped at any point (Ctrl-C, a killed process) resumes where it stopped.
A trainer (`compare.Trainer`) only trains: it gets a run's configuration and
returns its result. With Ray each run is one task: a worker that dies mid-run
(killed, out of memory) has its run retried on another worker (`MAX_RETRIES`
times); a run that fails for a reason of its own (its code raises) comes back
as a failed result with its error, shown in the table and not cached, so the
next invocation tries it once more and no invocation tries it forever.

One `rich` display follows the whole job: a bar over the runs (done, running,
failed, cached) and, in this process, a bar over the current run's steps with
an estimate of the time left.
"""

import math
import os
import re
import sys
import time
import traceback
import uuid
from pathlib import Path

import keras
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from keras_mtl.benchmark import cache

# Attempts after the first when a Ray worker dies mid-run (a run's own error is never retried).
MAX_RETRIES = 3


def run_name(config):
    """A run for people: its row label, method arguments, seed and learning rate."""
    arguments = (
        ""
        if config["method_id"] == "single_task"
        else "".join(f"{name}={value} " for name, value in config["method_kwargs"].items())
    )
    return f"{config['label']} {arguments}seed {config['seed']} lr {config['learning_rate']:g}"


def failed_result(config, tasks, error):
    """The result of a run that raised: NaN metrics (it ranks last), its error in one line and its traceback."""
    nan = {task: math.nan for task in tasks}
    details = "".join(traceback.format_exception(error))
    return {
        "config": config,
        "test": nan,
        "validation": dict(nan),
        "diverged": None,
        "error": _error_text(error),
        "traceback": details,
        "seconds_per_step": math.nan,
        "history": {},
    }


def _error_text(error):
    """`Type: the message's last line` (Ray's errors end with the original one), without terminal colours."""
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1].strip()}" if lines else type(error).__name__


def cached_results(configs, folder):
    """`(results, to_train)`: the usable cached result of each config (by path), and the configs to train (a note for each unusable file)."""
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


class Display(keras.callbacks.Callback):
    """The `rich` display of a job: runs done, running, failed and cached, and the current run's steps (a Keras callback).

    On a terminal the bars update in place; elsewhere (a log file) only the
    line of each finished run is printed, on stderr.
    """

    def __init__(self, num_runs, num_cached, enabled=True):
        super().__init__()
        self.num_runs, self.cached, self.done, self.failed, self.running = num_runs, num_cached, 0, 0, 0
        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("spent,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=self.console,
            transient=True,  # the lines of the finished runs stay; the bars go
            disable=not enabled,
        )
        self.runs = self.bar.add_task(self._summary(), total=num_runs)
        self.steps = None

    def _summary(self):
        return f"runs: {self.done} done, {self.running} running, {self.failed} failed, {self.cached} cached"

    def in_flight(self, count):
        """How many runs are running now (on Ray: submitted and not finished)."""
        self.running = count
        self.bar.update(self.runs, description=self._summary())

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc_info):
        self.bar.stop()

    def start(self, config):
        """A run starts in this process: its step bar appears."""
        self.in_flight(1)
        if self.steps is not None:
            self.bar.remove_task(self.steps)
        self.steps = self.bar.add_task(f"  {run_name(config)}", total=None)

    def finish(self, config, result, seconds, running=0):
        """A run has finished (or failed): a line for it, and the counts."""
        self.running = running
        if result.get("error"):
            self.failed += 1
            outcome = f"failed: {result['error']}"
        else:
            self.done += 1
            outcome = f"{seconds:.1f}s" + (f", diverged ({result['diverged']})" if result.get("diverged") else "")
        index = self.done + self.failed
        self.bar.update(self.runs, completed=index, description=self._summary())
        self.console.print(f"run {index}/{self.num_runs} {run_name(config)}: {outcome}")

    # Keras callback: the current run's steps over all its epochs, with Rich's estimate of the time left.
    def on_train_begin(self, logs=None):
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        total = steps * self.params["epochs"] if steps else None
        self.bar.update(self.steps, total=total, completed=self.epoch * (steps or 0) + batch + 1)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the job; the message says what is kept and how to resume."""


def _interrupted(folder, kept, resume):
    return Interrupted(
        f"Stopped. The {kept} finished runs are kept in {folder}; nothing of the run in progress is. "
        f"To resume, run the same {resume} again: the finished runs are read from there, the others trained."
    )


def execute(configs, folder, trainer, *, ray=None, progress=True, callbacks=None, keep=None, resume="command"):
    """Every config's result: read from the cache in `folder`, else trained (and saved) now.

    Args:
        configs: run configurations (`compare.train_run`'s format).
        folder: the cache folder.
        trainer: `trainer(config, callbacks=...)` returns a run's result;
            with Ray it is pickled to the workers, `trainer.tasks(config)`
            names the tasks of a failed run's NaN metrics.
        ray: None to train in this process; else `RayOptions`.
        progress: show the `rich` display.
        callbacks: `callbacks(config)` gives more Keras callbacks for a run
            (in this process only), e.g. TensorBoard.
        keep: `keep(result)` gives what the cache keeps of a result (all of it by default).
        resume: what to tell a person to run again after Ctrl-C.

    Returns:
        `(results in the order of configs, number of runs trained now)`.

    Raises:
        Interrupted: on Ctrl-C, after saying what is kept.
    """
    results, to_train = cached_results(configs, folder)
    print(
        f"{len(configs)} runs, {len(results)} already done in {folder}, {len(to_train)} to train{f' on Ray ({ray.describe()})' if ray and to_train else ''}."
    )

    def record(config, result):
        path = cache.run_path(folder, config)
        results[path] = result
        if not result.get("error"):
            cache.save(path, keep(result) if keep else result)

    with Display(len(to_train), len(results), progress) as display:
        try:
            if ray and to_train:
                _execute_on_ray(to_train, trainer, ray, record, display)
            else:
                for config in to_train:
                    display.start(config)
                    started = time.perf_counter()
                    try:
                        result = trainer(config, callbacks=[display, *(callbacks(config) if callbacks else [])])
                    except (
                        Exception
                    ) as error:  # a run's own failure is a result; Ctrl-C (not an Exception) stops the job
                        result = failed_result(config, trainer.tasks(config), error)
                    record(config, result)
                    display.finish(config, result, time.perf_counter() - started)
        except KeyboardInterrupt:
            display.bar.stop()
            kept = sum(1 for path in results if path.exists())
            raise _interrupted(folder, kept, resume) from None
    return [results[cache.run_path(folder, c)] for c in configs], len(to_train)


class RayOptions:
    """How to run on Ray: the cluster's address (None: a local instance), and the CPUs and GPUs each run reserves."""

    def __init__(self, address=None, cpus_per_run=1, gpus_per_run=0):
        if not cpus_per_run > 0 or gpus_per_run < 0:
            raise ValueError(
                f"Ray: each run needs more than 0 CPUs and at least 0 GPUs, got cpus_per_run={cpus_per_run}, gpus_per_run={gpus_per_run}."
            )
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run

    def describe(self):
        where = f"cluster {self.address}" if self.address else "this machine"
        return f"{where}, {self.cpus_per_run:g} CPU{'s' if self.cpus_per_run != 1 else ''}{f' and {self.gpus_per_run:g} GPUs' if self.gpus_per_run else ''} per run"


# Trainers a Ray worker has unpickled, by token: the data is loaded once per worker, not once per run.
_WORKER_TRAINERS = {}


def _train_in_worker(token, trainer, config):
    """A Ray task: one run's result, or its failure (a run's own error comes back as a result, so Ray never retries it)."""
    trainer = _WORKER_TRAINERS.setdefault(token, trainer)
    try:
        return trainer(config)
    except Exception as error:
        return failed_result(config, trainer.tasks(config), error)


def _send_local_code(ray, trainer):
    """Lets the workers have the user's code from the current folder (`--model my_models:build`), which they may not be able to import: it is pickled by value."""
    for function in (trainer.model_builder, *trainer.sources.values()):
        module = sys.modules.get(getattr(function, "__module__", None) or "")
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        if module and not module.__name__.startswith("keras_mtl") and path.is_relative_to(Path.cwd().resolve()):
            ray.cloudpickle.register_pickle_by_value(module)


def _execute_on_ray(configs, trainer, options, record, display):
    try:
        import ray
    except ImportError:
        raise ImportError("Training on Ray needs the ray package: pip install 'keras_mtl[ray]'") from None

    if not ray.is_initialized():
        # Local by default; the workers keep TensorFlow's C++ log lines to themselves.
        ray.init(
            address=options.address,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}},
        )
    _send_local_code(ray, trainer)
    remote = ray.remote(_train_in_worker).options(
        num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=MAX_RETRIES, retry_exceptions=False
    )
    token, shared = uuid.uuid4().hex, ray.put(trainer)
    pending = {remote.remote(token, shared, config): (config, time.perf_counter()) for config in configs}
    display.in_flight(len(pending))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                config, started = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except (
                    ray.exceptions.RayError
                ) as error:  # the worker died MAX_RETRIES + 1 times, or the task could not start
                    result = failed_result(config, trainer.tasks(config), error)
                record(config, result)
                display.finish(config, result, time.perf_counter() - started, running=len(pending))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
