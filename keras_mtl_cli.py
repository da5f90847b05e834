"""The `keras-mtl` command: `keras-mtl benchmark ...`, `keras-mtl speed ...`, `keras-mtl study ...`.

A top-level module, not part of the `keras_mtl` package, on purpose: importing
anything inside that package runs its `__init__`, which imports TensorFlow
(seconds). Here the arguments are parsed and checked first, with the standard
library only, so that `--help`, `--version` and a mistyped option or method id
answer at once; TensorFlow is imported only to run a command.
"""

import argparse
import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path

# The loaders of `keras_mtl.benchmark.compare.DATASETS`, by name (a test checks they agree).
DATASETS = (
    "celeb_a",
    "gradnorm_toy",
    "multi_fashion",
    "multi_mnist",
    "multi_mnist_5k",
    "multi_mnist_5k_sum",
    "qm9pack",
)
# Representative loss weightings and gradient methods, few enough for the
# default run to take minutes on a CPU (`--methods` picks any others).
DEFAULT_METHODS = (
    "ew",
    "uw",
    "uw_so",
    "dwa",
    "rlw",
    "famo",
    "mean",
    "gradnorm",
    "pcgrad",
    "mgda",
    "cagrad",
    "nash_mtl",
    "upgrad",
)
# The UW-SO temperature grid of Kirchdorfer et al. (2024), chosen on validation data.
TEMPERATURES = (1.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0)
SAM_VARIANTS = ("fmtl", "naive")
DEFAULT_SAM_ROWS = ("sam", "sam+mean", "sam+pcgrad", "sam+pcgrad:naive")

BENCHMARK_HELP = """\
Compare multi-task methods against single-task training and equal weighting.

Trains every method x seed (x learning rate x UW-SO temperature) on one data
set, plus the single-task baselines Δm% needs, and prints per-task test
metrics (mean ± sample std over seeds), Δm% against single-task training (negative:
better), each method's difference in Δm% from equal weighting with its 95%
paired t interval over the seeds and a verdict, the mean rank over tasks
(a diverged run ranks last), and the time per step relative to equal weighting.

Runs are paired by seed: every method starts from the same initial weights
and sees the data in the same order for a given seed, so the difference from
equal weighting is taken seed by seed. With several `--learning-rates`, and
for UW-SO over `--temperatures`, each method keeps the setting of its best
mean validation Δm%; the table shows the chosen learning rate and temperature.

Every finished run is saved as its own JSON file under OUTPUT/runs/, named by
a hash of its configuration; a run whose file exists (with the same settings
and format version) is not trained again, so an interrupted benchmark resumes
where it stopped. The table goes to OUTPUT/results.csv and results.json; the
plots to weights.png (each method's task weights at every step), validation.png
(validation curves) and metrics.png (per-task test metrics, against the
scalarization front with `--scalarization-grid on`). `--tensorboard DIR`
writes the logs of every run trained now to DIR/RUN.

Your own model and data: `--model my_package.models:build` names a function
`build(data, tasks)` returning an uncompiled keras_mtl model with one output
per task it is given (single-task baselines get one task, so they share the
architecture), `--data my_package.data:load` a function returning a
`keras_mtl.datasets.MultiTaskData`; both are imported (the current folder
too). The same from Python: `keras_mtl.benchmark.compare_methods(build, load, ...)`.

`--ray` trains the runs in parallel as Ray tasks (pip install
'keras_mtl[ray]') on this machine, `--ray-address ADDRESS` on a running Ray
cluster; each run reserves `--cpus-per-run` CPUs and `--gpus-per-run` GPUs.
This process keeps the cache and the table: a worker that dies has its run
retried, a run that raises is shown with its error.

Ctrl-C stops at once, keeping every finished run: run the same command again
to resume.
"""

SPEED_HELP = """\
Time one training step of every method, relative to equal weighting, and what `fit` costs.

Every method trains the same model on the same batch. A row gives, on
whichever Keras backend runs: the compiled step (`--steps` calls of
`train_on_batch`), its spread, the compile time (the first call minus a
step), the step over equal weighting's, and for gradient methods over
`mean`'s (the gradient method that only averages, which isolates the cost
of the aggregation); `× expected` divides the ratio by the cost the passes
alone imply, counting a backward pass as two forward passes. The `fit`
columns give `fit`'s seconds per step over `--fit-steps` batches for each
`--steps-per-execution`, and over a stock Keras model's `fit` of the same
network (rows of mode `stock`). SAM rows are `sam` (SAM on equal weighting)
and `sam+ID` (F-MTL with the gradient method ID; `sam+ID:naive` for the
naive combination).

The libraries run interleaved, cell by cell, in `--repeats` rounds; each
figure is the median of the rounds. Each row shows the highest 1-minute
load average seen while timing it; a cell above the busy threshold (by
default 1 + half the cores, `--busy-load`) is marked `busy`, and so is the
table's title: such a table is not for publication. `--require-quiet`
aborts instead.
`--peer torchjd` also times the same cells in TorchJD and prints each side's
step over its own equal-weighting step, and keras_mtl's step over TorchJD's.
"""

STUDY_HELP = """\
Check the reference papers' claims on offline real data; write a report.

Runs the experiments behind six claims and writes OUTPUT/report.md, with one
row per claim (the claim, the experiment, the numbers with 95% paired t
intervals over the seeds, and a verdict: reproduced, not reproduced, or
inconclusive at this budget) and a plot per claim (claim1.png ... claim6.png):
  1. UW-SO over its temperature grid vs the best scalarization-grid point and
     EW, UW, DWA, RLW, IMTL-L, GLS (Kirchdorfer et al. 2024);
  2. the spread of Δm% across weightings shrinks as the network widens (same);
  3. the learning rate matters more than the weight decay (same);
  4. F-MTL (per-task SAM in PCGrad) vs PCGrad and the naive SAM (Phan et al.);
  5. HydaLearn and GCosSim vs EW for a main QM9 target with the others as
     auxiliaries (Verboven et al.; needs `pip install 'keras_mtl[qm9]'`);
  6. multi-task vs single-task training (Gong et al. 2019).
The verdict rules are in the report and in keras_mtl/benchmark/study.py.

Runs are cached under OUTPUT/runs (or --cache) like the benchmark's, as small
JSON files beside tasks.json, so an interrupted study resumes, and with every
run there the report rebuilds from the folder alone in seconds (no training,
no data loaded): `keras-mtl study --output docs/study` rebuilds the
repository's report from docs/study/runs. The full study is 376 runs
(docs/study/rules.md, the rules fixed before its runs); --ray trains them as
Ray tasks like the benchmark's. --tiny runs a minimal configuration (seconds)
that only checks the machinery: its verdicts mean nothing.
"""

COMMANDS = {
    "benchmark": (
        "keras_mtl.benchmark.compare",
        "compare methods on a data set (metrics, Δm%%, differences from EW with intervals)",
    ),
    "speed": (
        "keras_mtl.benchmark.speed",
        "time one training step of every method against equal weighting, and fit against stock Keras",
    ),
    "study": (
        "keras_mtl.benchmark.study",
        "check the reference papers' claims; write a report with a verdict per claim",
    ),
}


def method_ids():
    """The registered method ids, read from the `@register("id")` lines of keras_mtl's sources without importing it.

    Importing keras_mtl fills the registry but costs seconds (TensorFlow); a
    test checks that this reading equals `keras_mtl.available()`.
    """
    package = Path(importlib.util.find_spec("keras_mtl").submodule_search_locations[0])
    pattern = re.compile(r'^@register\("([^"]+)"\)', re.MULTILINE)
    return sorted({found for path in package.rglob("*.py") for found in pattern.findall(path.read_text())})


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_benchmark_arguments(parser):
    parser.add_argument(
        "--dataset",
        default="multi_mnist_5k_sum",
        choices=DATASETS,
        help="the data set (default: multi_mnist_5k_sum, MultiMNIST-5k with a digit-sum regression task; see README)",
    )
    parser.add_argument("--methods", nargs="+", default=None, help=f"method ids (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument(
        "--seeds", type=_positive_int, default=2, help="seeds per method, 0 .. N-1 (intervals need 2 or more)"
    )
    parser.add_argument("--epochs", type=_positive_int, default=5)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument(
        "--learning-rates",
        type=_positive_float,
        nargs="+",
        default=[1e-3],
        help="a grid; each method keeps its best by validation Δm%% (default: 0.001)",
    )
    parser.add_argument(
        "--temperatures",
        type=_positive_float,
        nargs="+",
        default=list(TEMPERATURES),
        help=f"UW-SO's temperature grid, the best chosen on validation Δm%% (default: {' '.join(f'{t:g}' for t in TEMPERATURES)}, Kirchdorfer et al. 2024)",
    )
    parser.add_argument(
        "--scalarization-grid",
        choices=["on", "off"],
        default="off",
        help="also train the scalarization grid (the brute-force reference)",
    )
    parser.add_argument(
        "--max-examples", type=_positive_int, default=None, help="cut every split to this many examples (quick trials)"
    )
    parser.add_argument("--output", default="benchmark_results", help="folder of the results and the cached runs")
    parser.add_argument(
        "--tensorboard", metavar="DIR", default=None, help="write each trained run's TensorBoard logs to DIR/RUN"
    )
    parser.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        default=None,
        type=_reference,
        help="your model: build(data, tasks) -> uncompiled keras_mtl model with one output per task (default: a small CNN/MLP)",
    )
    parser.add_argument(
        "--data",
        metavar="MODULE:FUNCTION",
        default=None,
        type=_reference,
        help="your data: load() -> keras_mtl.datasets.MultiTaskData (replaces --dataset)",
    )
    _add_ray_arguments(parser)


def _add_ray_arguments(parser):
    parser.add_argument(
        "--ray",
        action="store_true",
        help="train the runs in parallel as Ray tasks on a local Ray instance (pip install 'keras_mtl[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="train on the running Ray cluster at ADDRESS (implies --ray)",
    )
    parser.add_argument(
        "--cpus-per-run", type=_positive_float, default=1.0, help="CPUs each Ray task reserves (default: 1)"
    )
    parser.add_argument(
        "--gpus-per-run", type=_non_negative_float, default=0.0, help="GPUs each Ray task reserves (default: 0)"
    )


def _reference(text):
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text):
        raise argparse.ArgumentTypeError(f"must be module:function, e.g. my_package.models:build, got {text!r}")
    return text


def _add_speed_arguments(parser):
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--tasks", nargs="+", type=_positive_int, default=[2, 4, 8], help="task counts, parameter mode")
    parser.add_argument(
        "--representation-tasks",
        nargs="+",
        type=_positive_int,
        default=[2, 4, 8, 40],
        help="task counts, representation mode (MLP)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"method ids or sam+ID[:naive] (default: all, and {' '.join(DEFAULT_SAM_ROWS)})",
    )
    parser.add_argument("--steps", type=_positive_int, default=20, help="timed train_on_batch steps per round")
    parser.add_argument(
        "--repeats", type=_positive_int, default=3, help="interleaved rounds; each figure is their median (default: 3)"
    )
    parser.add_argument(
        "--fit-steps",
        type=_non_negative_int,
        default=16,
        help="batches per timed fit epoch (default: 16; 0: no fit columns)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=_positive_int,
        nargs="+",
        default=[1, 8],
        help="the steps_per_execution values fit is timed with (default: 1 8)",
    )
    parser.add_argument(
        "--busy-load",
        type=_positive_float,
        default=None,
        help="the 1-minute load average above which a cell is busy (default: 1 + half the cores)",
    )
    parser.add_argument(
        "--require-quiet",
        action="store_true",
        help="abort, instead of marking cells busy, at the first load reading above the busy threshold",
    )
    parser.add_argument(
        "--batched",
        action="store_true",
        help="also time each gradient method with task_gradients='batched' (one vectorised backward pass) and show its ratio to the default sequential passes",
    )
    parser.add_argument(
        "--peer",
        choices=["torchjd"],
        default=None,
        help="also time the same cells in TorchJD on PyTorch (pip install 'keras_mtl[torchjd]'); default methods: those both have",
    )


def _add_study_arguments(parser):
    parser.add_argument(
        "--tiny", action="store_true", help="a minimal configuration that runs in seconds (checks the machinery only)"
    )
    parser.add_argument(
        "--seeds", type=_positive_int, default=None, help="paired seeds per run (default: 4; --tiny: 2)"
    )
    parser.add_argument("--output", default="study_results", help="folder of report.md and the plots")
    parser.add_argument("--cache", default=None, help="folder of the cached runs (default: OUTPUT/runs)")
    _add_ray_arguments(parser)


def _version():
    try:
        return importlib.metadata.version("keras_mtl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser():
    """The `keras-mtl` parser and `{command: its parser}`, one sub-command per entry of `COMMANDS`."""
    # No abbreviated options: a mistyped `--epoch` must be an error, not `--epochs`.
    parser = argparse.ArgumentParser(
        prog="keras-mtl",
        description="Multi-task learning for Keras 3: compare and time methods, check published claims.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"keras-mtl {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {}
    for name, add_arguments, description in (
        ("benchmark", _add_benchmark_arguments, BENCHMARK_HELP),
        ("speed", _add_speed_arguments, SPEED_HELP),
        ("study", _add_study_arguments, STUDY_HELP),
    ):
        subparsers[name] = commands.add_parser(
            name,
            help=COMMANDS[name][1],
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        add_arguments(subparsers[name])
    return parser, subparsers


def _unknown_methods(command, methods):
    """The ids in `methods` that name no registered method (for `speed`, also `sam+ID[:variant]` rows)."""
    known = set(method_ids())
    unknown = []
    for method in methods:
        if command == "speed" and method.startswith("sam+"):
            inner, _, variant = method[len("sam+") :].partition(":")
            if inner in known and variant in ("", *SAM_VARIANTS):
                continue
        if method not in known:
            unknown.append(method)
    return unknown


def suggestion(word, choices):
    """`; did you mean X?` for the choice nearest to a mistyped `word` (difflib), or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _options(parser):
    return [option for action in parser._actions for option in action.option_strings]


def parse(argv=None):
    """The parsed arguments of `keras-mtl COMMAND ...`; exits with a usage error for unknown options (naming the nearest), unknown method ids (the nearest too), or `--tensorboard` without tensorboard."""
    parser, subparsers = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = subparsers[args.command]
        hints = "".join(suggestion(word.split("=")[0], _options(command)) for word in extra if word.startswith("-"))
        command.error(f"unrecognized arguments: {' '.join(extra)}{hints}")
    unknown = _unknown_methods(args.command, getattr(args, "methods", None) or [])
    if unknown:
        hints = "".join(suggestion(method, method_ids()) for method in unknown)
        subparsers[args.command].error(f"unknown method ids {unknown}{hints}; known: {' '.join(method_ids())}")
    if (getattr(args, "ray", False) or getattr(args, "ray_address", None)) and importlib.util.find_spec("ray") is None:
        subparsers[args.command].error("--ray needs the ray package: pip install 'keras_mtl[ray]'")
    if getattr(args, "tensorboard", None) and importlib.util.find_spec("tensorboard") is None:
        subparsers[args.command].error(
            "--tensorboard needs the tensorboard package: pip install 'keras_mtl[tensorboard]'"
        )
    return args


def main(argv=None):
    """Runs `keras-mtl COMMAND ...`; returns the exit status (130 after Ctrl-C, having said what is kept)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    # TensorFlow's C++ log lines (e.g. "Skipping loop optimization", "Filling up shuffle buffer") stay off the progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        command = importlib.import_module(COMMANDS[args.command][0])
        # TensorFlow's Python warnings go through absl's logger: errors only.
        importlib.import_module("absl.logging").set_verbosity("error")
        command.run(args)
    except KeyboardInterrupt as interrupt:
        print(f"\n{interrupt or 'Stopped.'}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # At once: threads of TensorFlow's input pipeline can otherwise keep the process alive.
        os._exit(130)
    return 0
