"""The benchmark's report: Δm%, paired differences from EW, mean rank, the table, CSV / JSON and the plots.

Everything here works on finished runs, plain dicts as `compare.train_run`
returns them: `{"config": {...}, "test": {task: metric}, "validation": {...},
"seconds_per_step": s, "history": {...}}`. A missing or non-finite metric
(a run that diverged) is a result: it ranks last and gets no verdict.
"""

import csv
import json
import math

import numpy as np
from rich.console import Console
from rich.table import Table

SINGLE_TASK = "single_task"
REFERENCE = "ew"
CONFIDENCE = 0.95
BETTER, WORSE, UNDECIDED = "better than EW", "worse than EW", "no detectable difference at this budget"
ONE_SEED = "n/a, 1 seed"
# Every seed gave the same difference (few seeds, metrics quantised by a small
# test set): the zero-width t interval estimates no spread, so it decides nothing.
NO_SPREAD = "n/a, the same difference on every seed: add seeds"
NOT_FINITE = "n/a, a metric is not finite"


def delta_m(metrics, baseline, higher_is_better):
    """Δm% of `metrics` against `baseline`: negative is better than the baseline.

    `Δm% = (100/M) Σ_m (−1)^{s_m} (M_m − B_m) / B_m`, with `s_m = 1` where a
    higher metric is better (Maninis et al. 2019). A task missing from
    `metrics`, or whose baseline is 0, counts as NaN, so the result is NaN.

    Args:
        metrics, baseline: `{task: value}`.
        higher_is_better: `{task: bool}`.
    """
    # A baseline of 0 (e.g. an accuracy of 0 on a tiny test set) leaves the relative change undefined: NaN.
    terms = [
        (-1.0 if higher_is_better[t] else 1.0) * (metrics.get(t, math.nan) - baseline[t]) / baseline[t]
        if baseline[t]
        else math.nan
        for t in baseline
    ]
    return 100.0 * float(np.mean(terms))


def mean_ranks(scores, higher_is_better):
    """Each row's rank per task (1 = best, ties share their mean rank: `scipy.stats.rankdata`), averaged over the tasks.

    A missing or NaN metric ranks last (tied with the other missing ones):
    a run that diverged or failed is worse than any that finished.

    Args:
        scores: `{row: {task: value}}`.
        higher_is_better: `{task: bool}`.

    Returns:
        `{row: mean rank}`.
    """
    from scipy import stats

    rows = list(scores)
    ranks = np.zeros(len(rows))
    for task, higher in higher_is_better.items():
        values = np.array([scores[row].get(task, math.nan) for row in rows], dtype=float) * (-1.0 if higher else 1.0)
        values[np.isnan(values)] = math.inf
        ranks += stats.rankdata(values, method="average")
    return {row: float(rank) / len(higher_is_better) for row, rank in zip(rows, ranks)}


def paired_interval(differences, confidence=CONFIDENCE):
    """The paired t interval of the mean of per-seed differences `a − b`.

    `d̄ ± t_{(1+c)/2, n−1} · s_d / √n`, with `s_d` the sample standard
    deviation (ddof 1) of the n differences: the interval of a paired t test,
    `scipy.stats.ttest_rel(a, b).confidence_interval()`, which equals the
    one-sample test of the differences used here. Valid when the differences
    are roughly normal. Identical differences give a zero-width interval at
    their value.

    Returns:
        `(mean, low, high)`; `(mean, None, None)` for fewer than 2 differences,
        which leave the spread unknown.
    """
    from scipy import stats

    differences = np.asarray(differences, dtype=float)
    mean = float(np.mean(differences))
    if len(differences) < 2:
        return mean, None, None
    # Differences equal but for rounding are identical: a spread of 1e-16 is no spread (scipy would give NaN).
    if np.allclose(differences, mean, rtol=1e-9, atol=1e-12) or not np.isfinite(mean):
        return mean, mean, mean
    interval = stats.ttest_1samp(differences, 0.0).confidence_interval(confidence)
    return mean, float(interval.low), float(interval.high)


def p_value(differences):
    """The two-sided p-value of a paired t test that the mean difference is 0 (NaN below 2 seeds or without spread)."""
    from scipy import stats

    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2 or np.allclose(differences, np.mean(differences), rtol=1e-9, atol=1e-12):
        return math.nan
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def holm(p_values):
    """Holm's step-down adjustment of p-values, in their order: `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))`, sorted ascending.

    Rejecting where `p̃ < α` keeps the family-wise error rate at α across the
    m comparisons (Holm 1979). A NaN p-value (no test) stays NaN and does not
    count in m.
    """
    p_values = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p_values), math.nan)
    tested = np.flatnonzero(~np.isnan(p_values))
    order = tested[np.argsort(p_values[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def verdict(mean, low, high):
    """A plain reading of a difference in Δm% from EW (negative: better) and its interval."""
    if not math.isfinite(mean):
        return NOT_FINITE
    if low is None:
        return ONE_SEED
    if low == high and mean != 0:
        return NO_SPREAD
    if high < 0:
        return BETTER
    if low > 0:
        return WORSE
    return UNDECIDED


def _mean(values):
    return float(np.mean(values))


def _std(values):
    """The sample standard deviation (ddof 1), the one spread convention of the tables and the intervals; NaN for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _setting(run):
    """What a grid varies within one row: the learning rate and the method's arguments."""
    return run["config"]["learning_rate"], json.dumps(run["config"]["method_kwargs"], sort_keys=True)


def pick_settings(runs, baseline, higher_is_better):
    """Per row label, its runs at the setting (learning rate, method arguments) with the best mean validation Δm%.

    A NaN validation Δm% (a diverged run) is never chosen over a finite one.

    Args:
        runs: finished runs; `config["label"]` names the row.
        baseline: `{task: validation metric}` of the single-task baselines.
        higher_is_better: `{task: bool}`.

    Returns:
        `{label: [runs]}`.
    """
    by_label = {}
    for run in runs:
        by_label.setdefault(run["config"]["label"], {}).setdefault(_setting(run), []).append(run)

    def score(group):
        value = _mean([delta_m(r["validation"], baseline, higher_is_better) for r in group])
        return math.inf if math.isnan(value) else value

    return {label: min(by_setting.values(), key=score) for label, by_setting in by_label.items()}


def pick_baselines(baseline_runs, higher_is_better):
    """Per task, the single-task runs at the learning rate with the best mean validation metric.

    Returns:
        `{task: [runs]}`.
    """
    by_task = {}
    for run in baseline_runs:
        task = run["config"]["method_kwargs"]["task"]
        by_task.setdefault(task, {}).setdefault(run["config"]["learning_rate"], []).append(run)

    def score(task, group):
        value = _mean([r["validation"][task] for r in group])
        return math.inf if math.isnan(value) else -value if higher_is_better[task] else value

    return {task: min(by_rate.values(), key=lambda group: score(task, group)) for task, by_rate in by_task.items()}


def tuned_text(run, runs):
    """The method arguments of `run` that vary among the `runs` of its row, as `name=value` text ("" when none vary)."""
    label = run["config"]["label"]
    tried = {json.dumps(r["config"]["method_kwargs"], sort_keys=True) for r in runs if r["config"]["label"] == label}
    if len(tried) < 2:
        return ""
    return ", ".join(f"{name}={value:g}" for name, value in sorted(run["config"]["method_kwargs"].items()))


def _by_seed(group, baseline_test, higher_is_better):
    return {r["config"]["seed"]: delta_m(r["test"], baseline_test, higher_is_better) for r in group}


def summarize(runs, baseline_runs, higher_is_better):
    """The table's rows: the single-task baseline first, then one row per method label.

    Each row: `method`, `learning_rate` and `tuned` (the chosen setting),
    `seeds`, per task `{task}` and `{task}_std` (test metric over seeds),
    `delta_m` and `delta_m_std` (std: the sample standard deviation, ddof 1), `vs_ew` (the mean over seeds of the
    difference in Δm% from equal weighting trained with the same seed),
    `vs_ew_low` / `vs_ew_high` (its paired t interval, `CONFIDENCE`; None
    with one seed), `verdict` (or the error of a run that failed), `rank` (mean rank among the methods),
    `time_vs_ew` (seconds per step over equal weighting's). The `vs_ew…`
    and `time_vs_ew` fields are None without an `ew` row.
    """
    baselines = pick_baselines(baseline_runs, higher_is_better)
    tasks = list(higher_is_better)
    baseline_test = {t: _mean([r["test"][t] for r in baselines[t]]) for t in tasks}
    baseline_validation = {t: _mean([r["validation"][t] for r in baselines[t]]) for t in tasks}
    chosen = pick_settings(runs, baseline_validation, higher_is_better)
    reference = _by_seed(chosen[REFERENCE], baseline_test, higher_is_better) if REFERENCE in chosen else None

    rows = [_baseline_row(baselines, tasks)]
    for label, group in chosen.items():
        deltas = _by_seed(group, baseline_test, higher_is_better)
        row = {
            "method": label,
            "learning_rate": group[0]["config"]["learning_rate"],
            "tuned": tuned_text(group[0], runs),
            "seeds": len(group),
        }
        for t in tasks:
            values = [r["test"].get(t, math.nan) for r in group]
            row[t], row[f"{t}_std"] = _mean(values), _std(values)
        row.update(delta_m=_mean(list(deltas.values())), delta_m_std=_std(list(deltas.values())))
        row.update(_against_reference(label, deltas, reference))
        errors = [r["error"] for r in group if r.get("error")]
        if errors:
            row["verdict"] = (
                f"failed: {errors[0]}"
                if len(errors) == len(group)
                else f"{len(errors)} of {len(group)} runs failed: {errors[0]}"
            )
        row["seconds_per_step"] = _mean([r["seconds_per_step"] for r in group])
        rows.append(row)
    methods = rows[1:]
    ranks = mean_ranks({row["method"]: {t: row[t] for t in tasks} for row in methods}, higher_is_better)
    ew = next((row["seconds_per_step"] for row in methods if row["method"] == REFERENCE), None)
    for row in methods:
        row["rank"] = ranks[row["method"]]
        row["time_vs_ew"] = row["seconds_per_step"] / ew if ew else None
    return rows


def _against_reference(label, deltas, reference):
    """A row's difference in Δm% from EW, paired by seed (the seeds both have), its interval and verdict."""
    if reference is None:
        return {"vs_ew": None, "vs_ew_low": None, "vs_ew_high": None, "verdict": None}
    if label == REFERENCE:
        return {"vs_ew": 0.0, "vs_ew_low": None, "vs_ew_high": None, "verdict": "reference"}
    seeds = sorted(set(deltas) & set(reference))
    mean, low, high = paired_interval([deltas[s] - reference[s] for s in seeds])
    return {"vs_ew": mean, "vs_ew_low": low, "vs_ew_high": high, "verdict": verdict(mean, low, high)}


def _baseline_row(baselines, tasks):
    """The single-task row: each task's own baseline, whose learning rates may differ."""
    row = {"method": SINGLE_TASK, "learning_rate": None, "tuned": "", "seeds": min(len(baselines[t]) for t in tasks)}
    for t in tasks:
        values = [r["test"][t] for r in baselines[t]]
        row[t], row[f"{t}_std"] = _mean(values), _std(values)
    row.update(delta_m=0.0, delta_m_std=0.0, vs_ew=None, vs_ew_low=None, vs_ew_high=None, verdict=None)
    row.update(seconds_per_step=None, rank=None, time_vs_ew=None)
    return row


def _number(value, spec):
    return "—" if value is None else format(value, spec)


def _difference(row):
    if row["vs_ew"] is None or row["method"] == REFERENCE:
        return "—"
    if row["vs_ew_low"] is None:
        return f"{row['vs_ew']:+.2f} (n/a, 1 seed)"
    return f"{row['vs_ew']:+.2f} [{row['vs_ew_low']:+.2f}, {row['vs_ew_high']:+.2f}]"


def benchmark_table(rows, tasks, title=None, max_task_columns=6):
    """The rows as a `rich` table (the first `max_task_columns` tasks get a column)."""
    shown = list(tasks)[:max_task_columns]
    caption = f"{len(tasks) - len(shown)} more task columns in the CSV" if len(tasks) > len(shown) else None
    table = Table(title=title, caption=caption, box=None, pad_edge=False, header_style="bold")
    table.add_column("method")
    for name in ("lr", "tuned", *shown, "Δm% ↓", f"vs EW, {CONFIDENCE:.0%} CI", "verdict", "rank ↓", "time/step × ew"):
        table.add_column(name, justify="left" if name in ("tuned", "verdict") else "right")
    for row in rows:
        table.add_row(
            row["method"],
            _number(row["learning_rate"], "g"),
            row["tuned"],
            *(f"{row[t]:.4f} ± {row[f'{t}_std']:.4f}" for t in shown),
            f"{row['delta_m']:+.2f} ± {row['delta_m_std']:.2f}",
            _difference(row),
            row["verdict"] or "",
            _number(row["rank"], ".2f"),
            _number(row["time_vs_ew"], ".2f"),
        )
    return table


def print_table(table, file=None):
    """Prints a `rich` table at its natural width when the output is not a terminal (a file keeps every column)."""
    console = Console(file=file, highlight=False)
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(1_000_000)).maximum
        console = Console(file=file, highlight=False, width=max(natural, 80))
    console.print(table)


def write_csv(rows, path):
    """The table rows as CSV, one column per field."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(rows, runs, path):
    """The table rows and every run they come from."""
    with open(path, "w") as file:
        json.dump({"table": rows, "runs": runs}, file, indent=1)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(plt, count):
    columns = min(4, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, sharex=True)
    for axis in axes.flat[count:]:
        axis.axis("off")
    return figure, axes


def plot_weights(runs, path):
    """Each method's task weights at every training step (its first seed, at its chosen setting)."""
    plt = pyplot()
    figure, axes = _panels(plt, len(runs))
    for axis, run in zip(axes.flat, runs):
        for task, weights in run["history"]["weights"].items():
            axis.plot(np.arange(1, len(weights) + 1), weights, label=task, linewidth=0.8)
        axis.set_title(run["config"]["label"], fontsize=9)
        # Constant weights carry float32 noise: show them flat rather than magnified.
        low, high = axis.get_ylim()
        if high - low < 1e-3:
            axis.set_ylim(low - 0.05, high + 0.05)
    for axis in axes[-1]:
        axis.set_xlabel("step")
    axes.flat[0].legend(fontsize=6)
    save_figure(plt, figure, path)


def save_figure(plt, figure, path):
    """Writes a finished figure (tight layout, 110 dpi) and frees it."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_validation(runs, tasks, path):
    """One panel per task: its validation metric after each epoch, one line per method (first seed, chosen setting)."""
    plt = pyplot()
    figure, axes = _panels(plt, len(tasks))
    for axis, (task, spec) in zip(axes.flat, tasks.items()):
        for run in runs:
            curve = run["history"]["validation"][task]
            axis.plot(np.arange(1, len(curve) + 1), curve, marker=".", linewidth=0.8, label=run["config"]["label"])
        axis.set_title(f"{task}: validation {spec.metric}", fontsize=9)
    for axis in axes[-1]:
        axis.set_xlabel("epoch")
    axes.flat[0].legend(fontsize=6)
    save_figure(plt, figure, path)


def plot_metrics(rows, tasks, higher_is_better, path, max_pairs=3):
    """Per-task test metrics of every row, with the scalarization grid's points joined as a front.

    One panel per task pair (first task against each other, at most `max_pairs`).
    """
    plt = pyplot()
    tasks = list(tasks)
    pairs = [(tasks[0], other) for other in tasks[1 : max_pairs + 1]]
    figure, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    grid = [row for row in rows if row["method"].startswith("scalarization(")]
    for axis, (a, b) in zip(axes[0], pairs):
        if grid:
            front = sorted(grid, key=lambda row: row[a])
            axis.plot(
                [r[a] for r in front], [r[b] for r in front], "o-", color="0.7", label="scalarization grid", zorder=1
            )
        for row in rows:
            if row not in grid:
                marker = "*" if row["method"] == SINGLE_TASK else "o"
                axis.scatter(row[a], row[b], marker=marker, s=60, zorder=2)
                axis.annotate(row["method"], (row[a], row[b]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(f"{a} ({'higher' if higher_is_better[a] else 'lower'} is better)")
        axis.set_ylabel(f"{b} ({'higher' if higher_is_better[b] else 'lower'} is better)")
        if grid:
            axis.legend(fontsize=7)
    save_figure(plt, figure, path)
