"""`keras-mtl study`: the experiments behind the reference papers' claims, and a report with a verdict per claim.

What the command does is in `keras_mtl_cli.STUDY_HELP`. Here: the two
configurations (`FULL`, `TINY`), the runs each claim needs (`claim_runs`),
one analysis per claim (`analyse_*`: numbers, intervals and a verdict by the
rule in its docstring), and the report (markdown and one plot per claim).

Every run is a `keras_mtl.benchmark.compare` run configuration, trained by
`compare.train_run` and cached by `keras_mtl.benchmark.cache` (checked and
written atomically), so an interrupted study resumes where it stopped and the
runs the claims share (equal weighting, the single-task baselines) train once.
Runs of one seed are paired: the same initial weights and data order for every
method, so each difference below is taken seed by seed and its interval is
the paired t interval over the seeds (`report.paired_interval`).
"""

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

import keras_mtl
from keras_mtl.benchmark import cache, compare, report, runner

# The commit that fixed the study's rules (docs/study/rules.md) before its runs; the report cites it.
RULES_COMMIT = "e45feeaff030"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive at this budget"
# Claim 1's "comparable to the best scalarization": UW-SO's Δm% is at most this
# many points above the grid's best, with 95% confidence (Δm% of these runs
# spread over a few points between methods).
COMPARABLE_MARGIN = 1.0


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The budget of a study: data, training and the grids of each claim.

    Attributes:
        dataset, max_examples: the data of claims 1–4 and 6 (`compare.DATASETS`).
        epochs, batch_size, learning_rate, seeds: every run's training.
        temperatures: UW-SO's grid (claim 1), chosen on validation Δm%.
        grid_step: step and minimum of the scalarization grid (claim 1).
        rivals: the weightings UW-SO is compared with (claim 1); the first is the reference, EW.
        widths: multipliers of the model's width (claim 2), 1 included.
        width_methods: the methods whose spread claim 2 measures.
        learning_rates, weight_decays: claim 3's grids; the first weight decay
            and `learning_rate` are the defaults the other grid holds fixed.
        grid_methods: the methods of claim 3.
        sam_methods: the gradient methods F-MTL wraps (claim 4).
        sam_rhos: SAM's radius grid (claim 4); F-MTL and the naive combination
            each keep their best ρ by validation Δm%.
        uw_so_on_auxiliary: also judge claim 1's comparison with the rivals on
            the auxiliary data set (every task a task, trained like claim 5).
        auxiliary_dataset, auxiliary_max_examples, main_task, auxiliary_epochs,
        auxiliary_batch_size: claim 5's data and training (a main task, the
            others auxiliary).
    """

    dataset: str
    max_examples: int | None
    epochs: int
    batch_size: int
    learning_rate: float
    seeds: int
    temperatures: tuple
    grid_step: float
    rivals: tuple
    widths: tuple
    width_methods: tuple
    learning_rates: tuple
    weight_decays: tuple
    grid_methods: tuple
    sam_methods: tuple
    sam_rhos: tuple
    auxiliary_dataset: str
    auxiliary_max_examples: int | None
    main_task: str
    auxiliary_epochs: int
    auxiliary_batch_size: int
    uw_so_on_auxiliary: bool


# The rules fixed before the rerun (docs/study/rules.md). Not timed as a whole: see docs/study/rules.md for the run counts.
FULL = StudyConfig(
    dataset="multi_mnist_5k_sum",
    max_examples=None,
    epochs=5,
    batch_size=64,
    learning_rate=1e-3,
    seeds=4,
    temperatures=(1.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0),
    grid_step=0.2,
    rivals=("ew", "uw", "dwa", "rlw", "imtl_l", "gls"),
    # Width ×2 added (claim 2 stopped at ×1 before): a width ×2 run costs about 3 of width ×1.
    widths=(0.25, 0.5, 1.0, 2.0),
    width_methods=("ew", "uw", "dwa", "rlw", "imtl_l", "gls"),
    learning_rates=(3e-4, 1e-3, 3e-3),
    weight_decays=(0.0, 0.01, 0.1),
    grid_methods=("ew", "uw", "gls"),
    sam_methods=("pcgrad",),
    auxiliary_dataset="qm9pack",
    auxiliary_max_examples=10_000,
    main_task="homo",
    auxiliary_epochs=10,
    auxiliary_batch_size=128,
    # A small grid around Phan et al.'s 0.05, chosen on validation for F-MTL and the naive combination alike.
    sam_rhos=(0.01, 0.05, 0.2),
    # Claim 1's rivals also on QM9 (11 tasks, so no scalarization grid there).
    uw_so_on_auxiliary=True,
)

# End to end in well under a minute: the tests run it.
TINY = StudyConfig(
    dataset="multi_mnist_5k",
    max_examples=64,
    epochs=1,
    batch_size=32,
    learning_rate=1e-3,
    seeds=2,
    temperatures=(1.0,),
    grid_step=0.5,
    rivals=("ew", "uw"),
    widths=(0.5, 1.0),
    width_methods=("ew", "uw"),
    learning_rates=(1e-3, 3e-3),
    weight_decays=(0.0, 0.1),
    grid_methods=("ew",),
    sam_methods=("pcgrad",),
    auxiliary_dataset="multi_mnist_5k",
    auxiliary_max_examples=64,
    main_task="left",
    auxiliary_epochs=1,
    auxiliary_batch_size=32,
    sam_rhos=(0.05, 0.2),
    uw_so_on_auxiliary=True,
)


# ---------------------------------------------------------------- run configurations


def _run(study, label, method_id, kwargs, seed, *, width=1.0, learning_rate=None, weight_decay=0.0, auxiliary=False):
    """One run's configuration, in `compare.train_run`'s format."""
    return {
        "dataset": study.auxiliary_dataset if auxiliary else study.dataset,
        "max_examples": study.auxiliary_max_examples if auxiliary else study.max_examples,
        "epochs": study.auxiliary_epochs if auxiliary else study.epochs,
        "batch_size": study.auxiliary_batch_size if auxiliary else study.batch_size,
        "label": label,
        "method_id": method_id,
        "method_kwargs": kwargs,
        "seed": seed,
        "learning_rate": study.learning_rate if learning_rate is None else learning_rate,
        "width": width,
        "weight_decay": weight_decay,
    }


def _single_task(study, tasks, seed, **settings):
    return [_run(study, f"{report.SINGLE_TASK}:{t}", report.SINGLE_TASK, {"task": t}, seed, **settings) for t in tasks]


def grid_points(study, num_tasks):
    """`(label, weights)` of claim 1's scalarization grid (step and minimum `grid_step`)."""
    points = keras_mtl.scalarization_grid(num_tasks, step=study.grid_step, minimum=study.grid_step)
    return [(f"scalarization({','.join(f'{w:g}' for w in p)})", list(p)) for p in points]


def _sam(study, g, variant, rho, seed):
    label = f"sam+{g}" if variant == "fmtl" else f"sam+{g}:naive"
    return _run(study, label, "sam", {"method": g, "variant": variant, "rho": rho}, seed)


def claim_runs(study, tasks, auxiliary_tasks=()):
    """`{claim: [run configs]}`: what each claim's analysis reads (runs shared between claims appear in each).

    Args:
        tasks: the task names of `study.dataset`.
        auxiliary_tasks: those of `study.auxiliary_dataset` (claim 1's second data set).
    """
    seeds = range(study.seeds)
    runs = {claim: [] for claim in range(1, 7)}
    for s in seeds:
        baselines = _single_task(study, tasks, s)
        runs[1] += baselines + [_run(study, m, m, {}, s) for m in study.rivals]
        runs[1] += [_run(study, "uw_so", "uw_so", {"temperature": t}, s) for t in study.temperatures]
        runs[1] += [
            _run(study, label, "scalarization", {"weights": w}, s) for label, w in grid_points(study, len(tasks))
        ]
        if study.uw_so_on_auxiliary:
            runs[1] += _single_task(study, auxiliary_tasks, s, auxiliary=True) + [
                _run(study, m, m, {}, s, auxiliary=True) for m in study.rivals
            ]
            runs[1] += [
                _run(study, "uw_so", "uw_so", {"temperature": t}, s, auxiliary=True) for t in study.temperatures
            ]
        for width in study.widths:
            runs[2] += _single_task(study, tasks, s, width=width) + [
                _run(study, m, m, {}, s, width=width) for m in study.width_methods
            ]
        runs[3] += baselines
        for m in study.grid_methods:
            runs[3] += [_run(study, m, m, {}, s, learning_rate=lr) for lr in study.learning_rates]
            runs[3] += [_run(study, m, m, {}, s, weight_decay=wd) for wd in study.weight_decays]
        runs[4] += baselines
        for g in study.sam_methods:
            runs[4] += [_run(study, g, g, {}, s)] + [
                _sam(study, g, variant, rho, s) for variant in ("fmtl", "naive") for rho in study.sam_rhos
            ]
        runs[5] += [_run(study, "ew", "ew", {}, s, auxiliary=True)]
        runs[5] += [
            _run(study, m, m, {"main_task": study.main_task}, s, auxiliary=True) for m in ("hydalearn", "gcossim")
        ]
        runs[6] += baselines + [_run(study, m, m, {}, s) for m in study.rivals]
    return runs


# ---------------------------------------------------------------- analysis helpers


def _key(config):
    """A run's identity among the study's results: its cache file name."""
    return cache.run_path("", config).name


class Results:
    """The finished runs of a study, looked up by configuration, with the study's settings and the tasks' directions."""

    def __init__(self, study, results, higher_is_better, auxiliary_tasks=()):
        self.study = study
        self.by_key = {_key(r["config"]): r for r in results}
        self.higher = higher_is_better
        self.auxiliary_tasks = list(auxiliary_tasks)

    def get(self, config):
        return self.by_key[_key(config)]


def _interval(differences):
    """`{"mean", "low", "high"}` of per-seed differences (`report.paired_interval`; low/high None below 2 seeds)."""
    mean, low, high = report.paired_interval(differences)
    return {"mean": mean, "low": low, "high": high}


def _is_below(interval, bound=0.0):
    return interval["high"] is not None and interval["high"] < bound


def _is_above(interval, bound=0.0):
    return interval["low"] is not None and interval["low"] > bound


def _text(interval, unit=""):
    """`+1.23 [+0.45, +2.01]`, or `+1.23 (1 seed)`."""
    if interval["low"] is None:
        return f"{interval['mean']:+.2f}{unit} (1 seed)"
    return f"{interval['mean']:+.2f}{unit} [{interval['low']:+.2f}, {interval['high']:+.2f}]"


def _verdict(interval, expected, bound=0.0):
    """Reproduced when the whole interval lies on the `expected` side ("below" or "above") of `bound`, not reproduced when it lies on the other side, else inconclusive."""
    below, above = _is_below(interval, bound), _is_above(interval, bound)
    if below or above:
        return REPRODUCED if (below and expected == "below") or (above and expected == "above") else NOT_REPRODUCED
    return INCONCLUSIVE


def _side(interval, bound=0.0):
    """Where an interval lies, for the report: "lies below 0", "lies above 0" or "includes 0"."""
    return (
        f"lies below {bound:g}"
        if _is_below(interval, bound)
        else f"lies above {bound:g}"
        if _is_above(interval, bound)
        else f"includes {bound:g}"
    )


def holm_verdicts(differences, expected, alpha=1 - report.CONFIDENCE):
    """Per comparison, its verdict under Holm's correction for the family of `differences` (`{name: per-seed differences}`).

    A comparison is decided when its paired t test's Holm-adjusted p-value
    (`report.holm`) is below `alpha`: reproduced when its mean lies on the
    `expected` side of 0 ("below" or "above"), not reproduced on the other;
    else inconclusive. So the chance that any comparison of the family is
    decided wrongly stays at most `alpha`, however many comparisons it has.

    Returns:
        `{name: verdict}`.
    """
    names = list(differences)
    adjusted = report.holm([report.p_value(differences[name]) for name in names])
    verdicts = {}
    for name, p in zip(names, adjusted):
        mean = float(np.mean(differences[name]))
        if not p < alpha:
            verdicts[name] = INCONCLUSIVE
        else:
            verdicts[name] = REPRODUCED if (mean < 0) == (expected == "below") else NOT_REPRODUCED
    return verdicts


def combine(verdicts):
    """One verdict from the verdicts of a claim's parts: any part not reproduced → not reproduced; all reproduced → reproduced; else inconclusive."""
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE


def _combined_row(claim, experiment, numbers, parts, plot):
    """A report row whose verdict combines several parts' (`parts`: {name: verdict})."""
    return {
        "claim": claim,
        "experiment": experiment,
        "numbers": numbers,
        "verdict": combine(list(parts.values())),
        "parts": ", ".join(f"{name}: {part}" for name, part in parts.items()),
        "plot": plot,
    }


def _baseline(results, tasks, seeds, split="test", **settings):
    """`{task: metric}`: the single-task runs' mean over seeds (the Δm% reference, like the benchmark's)."""
    return {
        t: float(
            np.mean([results.get(c)[split][t] for s in seeds for c in _single_task(results.study, [t], s, **settings)])
        )
        for t in tasks
    }


def _delta_m(results, config, baseline, split="test"):
    return report.delta_m(results.get(config)[split], baseline, results.higher)


def _deltas(results, configs, baseline, split="test"):
    """Δm% of each run (one per seed) against `baseline`."""
    return [_delta_m(results, c, baseline, split) for c in configs]


def _best_by_validation(results, candidates, baseline_validation):
    """The candidate (a list of per-seed configs) with the best mean validation Δm%; a NaN one is never chosen over a finite one."""

    def score(configs):
        value = float(np.mean(_deltas(results, configs, baseline_validation, "validation")))
        return math.inf if math.isnan(value) else value

    return min(candidates, key=score)


# ---------------------------------------------------------------- one analysis per claim


def _versus_rivals(results, tasks, auxiliary=False):
    """UW-SO (its temperature chosen on validation Δm%) against each rival on one data set: per-seed test Δm% differences and the Holm verdicts."""
    study, seeds = results.study, range(results.study.seeds)
    baseline = _baseline(results, tasks, seeds, auxiliary=auxiliary)
    baseline_validation = _baseline(results, tasks, seeds, "validation", auxiliary=auxiliary)
    per_t = [
        [_run(study, "uw_so", "uw_so", {"temperature": t}, s, auxiliary=auxiliary) for s in seeds]
        for t in study.temperatures
    ]
    uw_so = _best_by_validation(results, per_t, baseline_validation)
    ours = _deltas(results, uw_so, baseline)
    rivals = {
        m: _deltas(results, [_run(study, m, m, {}, s, auxiliary=auxiliary) for s in seeds], baseline)
        for m in study.rivals
    }
    differences = {m: np.subtract(ours, theirs) for m, theirs in rivals.items()}
    verdicts = holm_verdicts(differences, "below")
    better = [m for m, v in verdicts.items() if v == REPRODUCED]
    worse = [m for m, v in verdicts.items() if v == NOT_REPRODUCED]
    part = NOT_REPRODUCED if worse else REPRODUCED if 2 * len(better) >= len(differences) else INCONCLUSIVE
    return {
        "uw_so": uw_so,
        "ours": ours,
        "rivals": rivals,
        "differences": differences,
        "better": better,
        "worse": worse,
        "verdict": part,
        "baseline": baseline,
        "baseline_validation": baseline_validation,
    }


def analyse_uw_so(results, tasks):
    """Claim 1 (Kirchdorfer et al. 2024): UW-SO comparable to the best scalarization, better than common weightings.

    UW-SO's temperature and the grid's best point are chosen on validation
    Δm% (mean over seeds); then per seed the test Δm% difference
    `UW-SO − other` (negative: UW-SO better). Verdict, parts combined by
    `combine`: (a) comparable to the grid: reproduced when the interval's upper
    end is below `COMPARABLE_MARGIN` (1 point of Δm%), not reproduced when its
    lower end is above it; (b) better than the rivals: each of the rivals is a
    comparison of one family, decided by a paired t test with Holm's
    correction over the family (`holm_verdicts`, family-wise error 5%);
    reproduced when UW-SO is detectably better than at least half of them and
    detectably worse than none, not reproduced when detectably worse than any.
    With `uw_so_on_auxiliary`, part (b) is judged on the auxiliary data set
    too, as a part of its own (its many tasks leave the scalarization grid
    without points, so part (a) is the main data set's only).
    """
    study, seeds = results.study, range(results.study.seeds)
    main = _versus_rivals(results, tasks)
    grid = [
        [_run(study, label, "scalarization", {"weights": w}, s) for s in seeds]
        for label, w in grid_points(study, len(tasks))
    ]
    best_grid = _best_by_validation(results, grid, main["baseline_validation"])
    versus_grid = _interval(np.subtract(main["ours"], _deltas(results, best_grid, main["baseline"])))
    part_a = _verdict(versus_grid, "below", COMPARABLE_MARGIN)
    rows = {
        "UW-SO": _interval(main["ours"]),
        "best scalarization": _interval(_deltas(results, best_grid, main["baseline"])),
    }
    rows.update({m: _interval(theirs) for m, theirs in main["rivals"].items()})
    temperature = main["uw_so"][0]["method_kwargs"]["temperature"]
    numbers = [
        f"UW-SO (T = {temperature:g}) − best scalarization ({best_grid[0]['label'][len('scalarization') :]}): {_text(versus_grid)}"
    ]
    numbers += [f"UW-SO − {m.upper()}: {_text(_interval(d))}" for m, d in main["differences"].items()]
    parts = [part_a, main["verdict"]]
    described = [
        f"(a) comparable to the grid (upper end < {COMPARABLE_MARGIN:g}): {part_a}",
        f"(b) better than {len(main['better'])} of {len(main['differences'])} rivals, worse than {len(main['worse'])} (Holm): {main['verdict']}",
    ]
    panels = {f"Δm% (test), {study.dataset}": rows}
    experiment = f"{study.dataset}, UW-SO over T ∈ {{{', '.join(f'{t:g}' for t in study.temperatures)}}} and {len(grid)} grid points (step {study.grid_step:g}), chosen on validation Δm%; test Δm% differences per seed"
    if study.uw_so_on_auxiliary:
        other = _versus_rivals(results, results.auxiliary_tasks, auxiliary=True)
        parts.append(other["verdict"])
        described.append(
            f"(b′) on {study.auxiliary_dataset}: better than {len(other['better'])} of {len(other['differences'])} rivals, worse than {len(other['worse'])} (Holm): {other['verdict']}"
        )
        temperature = other["uw_so"][0]["method_kwargs"]["temperature"]
        numbers += [
            f"{study.auxiliary_dataset}, UW-SO (T = {temperature:g}) − {m.upper()}: {_text(_interval(d))}"
            for m, d in other["differences"].items()
        ]
        panels[f"Δm% (test), {study.auxiliary_dataset}"] = {
            "UW-SO": _interval(other["ours"]),
            **{m: _interval(theirs) for m, theirs in other["rivals"].items()},
        }
        experiment += f"; the rivals also on {study.auxiliary_dataset} (all {len(results.auxiliary_tasks)} tasks, {study.auxiliary_epochs} epochs)"
    return {
        "claim": "UW-SO (T tuned on its grid) is comparable to the best scalarization-grid point and better than EW, UW, DWA, RLW, IMTL-L and GLS",
        "experiment": experiment,
        "numbers": numbers,
        "verdict": combine(parts),
        "parts": "; ".join(described),
        "plot": panels,
    }


def spread_slopes(spreads, widths):
    """Per seed, the least-squares slope of the spread against log2(width): `{seed: slope}`.

    Args:
        spreads: `{seed: [spread at each width]}`.
        widths: the widths, in the order of the spreads.
    """
    x = np.log2(np.asarray(widths, dtype=float))
    return {s: float(np.polyfit(x, np.asarray(values, dtype=float), 1)[0]) for s, values in spreads.items()}


def analyse_width(results, tasks):
    """Claim 2 (Kirchdorfer et al. 2024): the differences between weightings shrink as the network grows.

    Per seed and width, the spread is the standard deviation (ddof 1) across
    `width_methods` of test Δm% (against the single-task runs of that width);
    per seed, the slope of the spread against log2(width) (`spread_slopes`).
    Verdict: reproduced when the slope's interval is below 0, not reproduced
    when it is above 0, inconclusive otherwise.
    """
    study, seeds = results.study, range(results.study.seeds)
    spreads = {s: [] for s in seeds}
    for width in study.widths:
        baseline = _baseline(results, tasks, seeds, width=width)
        for s in seeds:
            deltas = [_delta_m(results, _run(study, m, m, {}, s, width=width), baseline) for m in study.width_methods]
            spreads[s].append(float(np.std(deltas, ddof=1)))
    slope = _interval(list(spread_slopes(spreads, study.widths).values()))
    verdict = _verdict(slope, "below")
    numbers = [
        f"spread at width ×{w:g}: {_text(_interval([spreads[s][i] for s in seeds]))}"
        for i, w in enumerate(study.widths)
    ]
    numbers.append(f"slope of the spread per doubling of the width: {_text(slope)}")
    return {
        "claim": "Larger networks diminish the differences between loss weightings",
        "experiment": f"{study.dataset}, {', '.join(study.width_methods)} at widths ×{', ×'.join(f'{w:g}' for w in study.widths)}; spread = std of test Δm% across methods, per seed",
        "numbers": numbers,
        "verdict": verdict,
        "parts": f"the slope's interval {_side(slope)}",
        "plot": {"spread": {f"×{w:g}": _interval([spreads[s][i] for s in seeds]) for i, w in enumerate(study.widths)}},
    }


def analyse_learning_rate(results, tasks):
    """Claim 3 (Kirchdorfer et al. 2024): the learning rate matters more than the weight decay.

    Per method and seed, the LR spread is the range (max − min) of test Δm%
    over `learning_rates` (weight decay `weight_decays[0]`), the WD spread
    the range over `weight_decays` (learning rate `learning_rate`); the two
    grids have the same size, so that the range's growth with the number of
    points favours neither. Per seed, `LR spread − WD spread` averaged over
    the methods. Verdict: reproduced when its interval is above 0, not
    reproduced when below 0, inconclusive otherwise.
    """
    study, seeds = results.study, range(results.study.seeds)
    baseline = _baseline(results, tasks, seeds)

    def spread(m, s, grid):
        values = [_delta_m(results, _run(study, m, m, {}, s, **setting), baseline) for setting in grid]
        return max(values) - min(values)

    lr_grid = [{"learning_rate": lr, "weight_decay": study.weight_decays[0]} for lr in study.learning_rates]
    wd_grid = [{"weight_decay": wd} for wd in study.weight_decays]
    gaps = {m: [spread(m, s, lr_grid) - spread(m, s, wd_grid) for s in seeds] for m in study.grid_methods}
    pooled = _interval(np.mean(list(gaps.values()), axis=0))
    verdict = _verdict(pooled, "above")
    numbers = [
        f"{m.upper()}: LR spread {_text(_interval([spread(m, s, lr_grid) for s in seeds]))}, WD spread {_text(_interval([spread(m, s, wd_grid) for s in seeds]))}"
        for m in study.grid_methods
    ]
    numbers.append(f"LR spread − WD spread, mean over methods: {_text(pooled)}")
    return {
        "claim": "The learning rate matters more than the weight decay",
        "experiment": f"{study.dataset}, {', '.join(study.grid_methods)}; LR ∈ {{{', '.join(f'{v:g}' for v in study.learning_rates)}}} vs decoupled (AdamW) weight decay wd ∈ {{{', '.join(f'{v:g}' for v in study.weight_decays)}}}, each step scaling the weights by 1 − LR·wd; spread = range of test Δm% over a grid, per seed",
        "numbers": numbers,
        "verdict": verdict,
        "parts": f"the interval of LR spread − WD spread {_side(pooled)}",
        "plot": {"LR spread − WD spread": {m.upper(): _interval(g) for m, g in gaps.items()}},
    }


def analyse_fmtl(results, tasks):
    """Claim 4 (Phan et al. 2022): F-MTL (per-task SAM inside a gradient method) improves the method, and beats the naive combination.

    F-MTL and the naive combination each keep their ρ of `sam_rhos` with the
    best validation Δm% (mean over seeds). Per inner method and seed, the test
    Δm% differences `F-MTL − method` and `F-MTL − naive`: all of them one
    family, each decided by a paired t test with Holm's correction
    (`holm_verdicts`): reproduced when detectably below 0, not reproduced
    when detectably above; the parts combined by `combine`.
    """
    study, seeds = results.study, range(results.study.seeds)
    baseline = _baseline(results, tasks, seeds)
    baseline_validation = _baseline(results, tasks, seeds, "validation")
    differences, chosen = {}, {}
    for g in study.sam_methods:
        plain = _deltas(results, [_run(study, g, g, {}, s) for s in seeds], baseline)
        tuned = {}
        for variant in ("fmtl", "naive"):
            best = _best_by_validation(
                results,
                [[_sam(study, g, variant, rho, s) for s in seeds] for rho in study.sam_rhos],
                baseline_validation,
            )
            tuned[variant], chosen[g, variant] = _deltas(results, best, baseline), best[0]["method_kwargs"]["rho"]
        differences[f"F-MTL({g}) − {g}"] = np.subtract(tuned["fmtl"], plain)
        differences[f"F-MTL({g}) − naive SAM+{g}"] = np.subtract(tuned["fmtl"], tuned["naive"])
    verdicts = holm_verdicts(differences, "below")
    rows = {name: _interval(d) for name, d in differences.items()}
    rhos = "; ".join(
        f"{g}: F-MTL ρ = {chosen[g, 'fmtl']:g}, naive ρ = {chosen[g, 'naive']:g}" for g in study.sam_methods
    )
    return _combined_row(
        "F-MTL (SAM per task inside a gradient method) beats the same method without SAM and the naive SAM combination",
        f"{study.dataset}, {', '.join(study.sam_methods)} with and without `SAM(variant='fmtl')` and with `variant='naive'`, ρ ∈ {{{', '.join(f'{r:g}' for r in study.sam_rhos)}}} chosen on validation Δm% ({rhos}); test Δm% differences per seed",
        [f"{name}: {_text(interval)}" for name, interval in rows.items()],
        {f"{name} (Holm)": verdict for name, verdict in verdicts.items()},
        {"Δm% difference (test)": rows},
    )


def analyse_auxiliary(results, tasks):
    """Claim 5 (Verboven et al. 2020): HydaLearn's per-batch weights, and GCosSim's, help a main task with auxiliaries.

    Per seed, the main task's test metric relative to equal weighting's, in
    percent and signed so that negative is better (`Δm%` on the main task
    alone, with EW as the reference). The two methods are one family, each
    decided by a paired t test with Holm's correction (`holm_verdicts`):
    reproduced when detectably below 0, not reproduced when detectably above,
    inconclusive otherwise; the two combined by `combine`.
    """
    study, seeds, main = results.study, range(results.study.seeds), results.study.main_task
    ew = [results.get(_run(study, "ew", "ew", {}, s, auxiliary=True)) for s in seeds]
    higher = {main: results.higher[main]}
    relative = {}
    for m in ("hydalearn", "gcossim"):
        runs = [results.get(_run(study, m, m, {"main_task": main}, s, auxiliary=True)) for s in seeds]
        relative[m] = [report.delta_m(r["test"], {main: e["test"][main]}, higher) for r, e in zip(runs, ew)]
    rows = {m: _interval(values) for m, values in relative.items()}
    return _combined_row(
        "HydaLearn (and GCosSim) weights help a main task with auxiliary tasks, against equal weighting",
        f"{study.auxiliary_dataset} (first {study.auxiliary_max_examples} examples per split), main task {main}, the other tasks auxiliary, {study.auxiliary_epochs} epochs; relative change of the main task's test metric vs EW per seed",
        [f"{m} vs EW, relative change of {main}'s test error: {_text(interval, '%')}" for m, interval in rows.items()],
        {f"{m} (Holm)": verdict for m, verdict in holm_verdicts(relative, "below").items()},
        {f"{main}: % vs EW (test)": rows},
    )


def analyse_single_task(results, tasks):
    """Claim 6 (Gong et al. 2019): multi-task training often does not beat single-task training.

    Per seed, the test Δm% of each of `rivals` against the single-task runs
    of the same seed (paired: same initial weights and data order). The
    claim concerns equal weighting, the usual multi-task default. Verdict:
    reproduced when EW's interval is above 0 (detectably worse than
    single-task training), not reproduced when below 0 (detectably better),
    inconclusive otherwise; the other weightings are reported beside it.
    """
    study, seeds = results.study, range(results.study.seeds)
    rows = {}
    for m in study.rivals:
        rows[m] = _interval(
            [_delta_m(results, _run(study, m, m, {}, s), _baseline(results, tasks, [s])) for s in seeds]
        )
    ew = rows[study.rivals[0]]
    verdict = _verdict(ew, "above")
    return {
        "claim": "Multi-task training (equal weighting) does not beat single-task training without a careful choice of tasks and weights",
        "experiment": f"{study.dataset}, {', '.join(study.rivals)} vs one single-task model per task, paired by seed; test Δm% (negative: multi-task better)",
        "numbers": [f"{m.upper()} Δm% vs single-task: {_text(d)}" for m, d in rows.items()],
        "verdict": verdict,
        "parts": f"EW's interval {_side(ew)}",
        "plot": {"Δm% vs single-task (test)": rows},
    }


ANALYSES = (analyse_uw_so, analyse_width, analyse_learning_rate, analyse_fmtl, analyse_auxiliary, analyse_single_task)


# ---------------------------------------------------------------- the report


def plot_intervals(panels, path, title):
    """One panel per entry of `panels` (`{panel title: {label: interval}}`): each label's mean with its 95% interval, and 0."""
    plt = report.pyplot()
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 0.45 * max(len(r) for r in panels.values()) + 1.6), squeeze=False
    )
    for axis, (name, rows) in zip(axes[0], panels.items()):
        labels = list(rows)
        means = np.array([rows[label]["mean"] for label in labels])
        low = np.array(
            [rows[label]["low"] if rows[label]["low"] is not None else rows[label]["mean"] for label in labels]
        )
        high = np.array(
            [rows[label]["high"] if rows[label]["high"] is not None else rows[label]["mean"] for label in labels]
        )
        positions = np.arange(len(labels))[::-1]
        axis.errorbar(means, positions, xerr=[means - low, high - means], fmt="o", capsize=3)
        axis.axvline(0.0, color="0.6", linewidth=0.8)
        axis.set_yticks(positions, labels, fontsize=8)
        axis.set_xlabel(name, fontsize=9)
    figure.suptitle(title, fontsize=10)
    report.save_figure(plt, figure, path)


def write_report(findings, study, output, command, seconds, trained, total):
    """Writes `report.md` (the table, then a section per claim with its plot) and the plots into `output`."""
    output = Path(output)
    lines = [
        "# Do the reference papers' claims hold here?",
        "",
        f"Command: `{command}`. This invocation: {seconds / 60:.1f} min, {trained} of {total} runs trained, the others read from the cache.",
        f"Data: `{study.dataset}` (claims 1–4, 6), `{study.auxiliary_dataset}` (claim 5); {study.seeds} seeds, paired "
        "(every method starts from the same weights and sees the same batches for a given seed);",
        f"{study.epochs} epochs, batch {study.batch_size}, Adam {study.learning_rate:g}. Numbers: mean over seeds "
        f"[{report.CONFIDENCE:.0%} paired t interval]; Δm% is against single-task training, negative is better.",
        "",
        "| # | claim | experiment | numbers (95% CI over paired seeds) | verdict |",
        "|---|---|---|---|---|",
    ]
    for number, finding in enumerate(findings, 1):
        numbers = "<br>".join(finding["numbers"])
        lines.append(
            f"| {number} | {finding['claim']} | {finding['experiment']} | {numbers} | **{finding['verdict']}** |"
        )
    lines += [
        "",
        "## Verdict rules and details",
        "",
        "A claim with several parts is reproduced when every part is, not reproduced when any part is not, and "
        "inconclusive otherwise (`combine`). Where a part combines several comparisons, each is a paired t test with "
        "Holm's correction over them (family-wise error 5%); the intervals shown are the unadjusted 95% ones. "
        "Spreads are sample standard deviations (ddof 1). "
        f"The rules: keras_mtl/benchmark/study.py and docs/study/rules.md{f', fixed in commit {RULES_COMMIT} before the runs' if RULES_COMMIT else ''}.",
        "",
    ]
    for number, (finding, analysis) in enumerate(zip(findings, ANALYSES), 1):
        plot = f"claim{number}.png"
        plot_intervals(finding["plot"], output / plot, f"Claim {number}: {finding['verdict']}")
        rule = " ".join(line.strip() for line in analysis.__doc__.split("\n\n", 1)[1].splitlines())
        lines += [
            f"### Claim {number}: {finding['verdict']}",
            "",
            finding["claim"] + ".",
            "",
            f"Rule: {rule}",
            "",
            f"Here: {finding['parts']}.",
            "",
            f"![claim {number}]({plot})",
            "",
        ]
    (output / "report.md").write_text("\n".join(lines))


# ---------------------------------------------------------------- the command


# In the cache folder, beside the runs: `{data set: {task: higher is better}}`, so that a report rebuilds from the folder alone.
TASKS_FILE = "tasks.json"


def data_tasks(folder, trainer):
    """`{data set: {task: higher is better}}` of the trainer's data sets: read from `folder/tasks.json`, else from the data (then written there)."""
    path = Path(folder) / TASKS_FILE
    known = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in trainer.sources if name not in known]
    if missing:
        known.update(
            {name: {t: spec.higher_is_better for t, spec in trainer.data(name).tasks.items()} for name in missing}
        )
        path.write_text(json.dumps(known, indent=1))
    return known


def slim(result):
    """What the study keeps of a run: all but its per-step history, which no claim reads (a file of about 1 kB)."""
    return {key: value for key, value in result.items() if key != "history"}


def _ray_options(args):
    return (
        runner.RayOptions(args.ray_address, args.cpus_per_run, args.gpus_per_run)
        if args.ray or args.ray_address
        else None
    )


def run(args):
    """Runs `keras-mtl study` (parsed by `keras_mtl_cli.parse`): trains what is missing, writes the report.

    Returns:
        `{"findings": [one dict per claim], "trained": runs trained now, "output": folder}`.
    """
    started = time.perf_counter()
    study = TINY if args.tiny else FULL
    if args.seeds:
        study = dataclasses.replace(study, seeds=args.seeds)
    output = Path(args.output)
    folder = Path(args.cache) if args.cache else output / "runs"
    for path in (output, folder):
        path.mkdir(parents=True, exist_ok=True)
    # Functions, not data: Ray workers load the data themselves, and a rebuild from the cache loads none.
    sources = {study.dataset: functools.partial(compare.load_data, study.dataset, study.max_examples)}
    sources.setdefault(
        study.auxiliary_dataset,
        functools.partial(compare.load_data, study.auxiliary_dataset, study.auxiliary_max_examples),
    )
    trainer = compare.Trainer(compare.build_model, sources)
    tasks = data_tasks(folder, trainer)
    if study.main_task not in tasks[study.auxiliary_dataset]:
        raise SystemExit(
            f"keras-mtl study: error: the main task {study.main_task!r} is not a task of {study.auxiliary_dataset} ({list(tasks[study.auxiliary_dataset])})."
        )
    runs = claim_runs(study, list(tasks[study.dataset]), list(tasks[study.auxiliary_dataset]))
    # Seed by seed: a study stopped early has every run of its first seeds, enough for a report with `--seeds` that many.
    unique = sorted({_key(c): c for claim in runs.values() for c in claim}.values(), key=lambda c: c["seed"])
    print("study: ", end="")
    finished, trained = runner.execute(unique, folder, trainer, ray=_ray_options(args), keep=slim, resume="command")
    higher = {t: higher for by_task in tasks.values() for t, higher in by_task.items()}
    results = Results(study, finished, higher, tasks[study.auxiliary_dataset])
    findings = [analysis(results, list(tasks[study.dataset])) for analysis in ANALYSES]
    options = {"--seeds": args.seeds, "--output": args.output, "--cache": args.cache}
    command = " ".join(
        [
            "keras-mtl study",
            *(["--tiny"] if args.tiny else []),
            *(f"{name} {value}" for name, value in options.items() if value),
        ]
    )
    write_report(findings, study, output, command, time.perf_counter() - started, trained, len(unique))
    for number, finding in enumerate(findings, 1):
        print(f"claim {number}: {finding['verdict']}: {'; '.join(finding['numbers'])}")
    print(f"Wrote {output / 'report.md'} and claim1.png … claim{len(findings)}.png.")
    return {"findings": findings, "trained": trained, "output": output}
