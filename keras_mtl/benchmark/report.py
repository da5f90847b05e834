"""The benchmark's report: Δm%, mean rank, the table, CSV / JSON and the plots.

Everything here works on finished runs, plain dicts as `compare.train_run`
returns them: `{"config": {...}, "test": {task: metric}, "validation": {...},
"seconds_per_step": s, "history": {...}}`.
"""

import csv
import json

import numpy as np

SINGLE_TASK = "single_task"


def delta_m(metrics, baseline, higher_is_better):
    """Δm% of `metrics` against `baseline`: negative is better than the baseline.

    `Δm% = (100/M) Σ_m (−1)^{s_m} (M_m − B_m) / B_m`, with `s_m = 1` where a
    higher metric is better.

    Args:
        metrics, baseline: `{task: value}` with the same tasks.
        higher_is_better: `{task: bool}`.
    """
    terms = [(-1.0 if higher_is_better[t] else 1.0) * (metrics[t] - baseline[t]) / baseline[t] for t in baseline]
    return 100.0 * float(np.mean(terms))


def mean_ranks(scores, higher_is_better):
    """Each row's rank per task (1 = best, ties share their mean rank), averaged over the tasks.

    Args:
        scores: `{row: {task: value}}`.
        higher_is_better: `{task: bool}`.

    Returns:
        `{row: mean rank}`.
    """
    rows = list(scores)
    ranks = np.zeros(len(rows))
    for task, higher in higher_is_better.items():
        values = np.array([scores[row][task] for row in rows]) * (-1.0 if higher else 1.0)
        # A value's rank is 1 + the number of better values + half the number of ties.
        ranks += [1 + np.sum(values < v) + (np.sum(values == v) - 1) / 2 for v in values]
    return {row: float(rank) / len(higher_is_better) for row, rank in zip(rows, ranks)}


def _mean(values):
    return float(np.mean(values))


def _std(values):
    return float(np.std(values))


def pick_learning_rates(runs, baseline, higher_is_better):
    """Per row label, its runs at the learning rate with the best mean validation Δm.

    Args:
        runs: finished runs; `config["label"]` names the row.
        baseline: `{task: validation metric}` of the single-task baselines.
        higher_is_better: `{task: bool}`.

    Returns:
        `{label: [runs]}`.
    """
    by_label = {}
    for run in runs:
        by_label.setdefault(run["config"]["label"], {}).setdefault(run["config"]["learning_rate"], []).append(run)
    return {
        label: min(by_rate.values(), key=lambda group: _mean([delta_m(r["validation"], baseline, higher_is_better) for r in group]))
        for label, by_rate in by_label.items()
    }


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
        return -value if higher_is_better[task] else value

    return {task: min(by_rate.values(), key=lambda group: score(task, group)) for task, by_rate in by_task.items()}


def summarize(runs, baseline_runs, higher_is_better):
    """The table's rows: the single-task baseline first, then one row per method label.

    Each row: `method`, `learning_rate`, `seeds`, per task `{task}` and
    `{task}_std` (test metric over seeds), `delta_m` and `delta_m_std`,
    `rank` (mean rank among the methods), `time_vs_ew` (seconds per step over
    equal weighting's, None without an `ew` row).
    """
    baselines = pick_baselines(baseline_runs, higher_is_better)
    tasks = list(higher_is_better)
    baseline_test = {t: _mean([r["test"][t] for r in baselines[t]]) for t in tasks}
    baseline_validation = {t: _mean([r["validation"][t] for r in baselines[t]]) for t in tasks}
    chosen = pick_learning_rates(runs, baseline_validation, higher_is_better)

    rows = [_baseline_row(baselines, tasks)]
    for label, group in chosen.items():
        deltas = [delta_m(r["test"], baseline_test, higher_is_better) for r in group]
        row = {"method": label, "learning_rate": group[0]["config"]["learning_rate"], "seeds": len(group)}
        for t in tasks:
            row[t], row[f"{t}_std"] = _mean([r["test"][t] for r in group]), _std([r["test"][t] for r in group])
        row.update(delta_m=_mean(deltas), delta_m_std=_std(deltas), seconds_per_step=_mean([r["seconds_per_step"] for r in group]))
        rows.append(row)
    methods = rows[1:]
    ranks = mean_ranks({row["method"]: {t: row[t] for t in tasks} for row in methods}, higher_is_better)
    ew = next((row["seconds_per_step"] for row in methods if row["method"] == "ew"), None)
    for row in methods:
        row["rank"] = ranks[row["method"]]
        row["time_vs_ew"] = row["seconds_per_step"] / ew if ew else None
    return rows


def _baseline_row(baselines, tasks):
    """The single-task row: each task's own baseline, whose learning rates may differ."""
    row = {"method": SINGLE_TASK, "learning_rate": None, "seeds": min(len(baselines[t]) for t in tasks)}
    for t in tasks:
        values = [r["test"][t] for r in baselines[t]]
        row[t], row[f"{t}_std"] = _mean(values), _std(values)
    row.update(delta_m=0.0, delta_m_std=0.0, seconds_per_step=None, rank=None, time_vs_ew=None)
    return row


def format_table(rows, tasks, max_task_columns=6):
    """The rows as a plain-text table (the first `max_task_columns` tasks get a column)."""
    shown = list(tasks)[:max_task_columns]
    header = ["method", "lr", *shown, "Δm% ↓", "rank ↓", "time/step × ew"]
    cells = []
    for row in rows:
        lr = "" if row["learning_rate"] is None else f"{row['learning_rate']:g}"
        metrics = [f"{row[t]:.4f} ± {row[f'{t}_std']:.4f}" for t in shown]
        delta = f"{row['delta_m']:+.2f} ± {row['delta_m_std']:.2f}"
        rank = "—" if row["rank"] is None else f"{row['rank']:.2f}"
        time = "—" if row["time_vs_ew"] is None else f"{row['time_vs_ew']:.2f}"
        cells.append([row["method"], lr, *metrics, delta, rank, time])
    widths = [max(len(c) for c in column) for column in zip(header, *cells)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in [header, *cells]]
    if len(tasks) > len(shown):
        lines.append(f"({len(tasks) - len(shown)} more task columns in the CSV)")
    return "\n".join(lines)


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


def plot_weights(runs, path):
    """Each method's task weights over training steps (its first seed, at its chosen learning rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(runs))
    rows = -(-len(runs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, sharex=True)
    for axis, run in zip(axes.flat, runs):
        for task, weights in run["history"]["weights"].items():
            axis.plot(np.arange(1, len(weights) + 1), weights, label=task, linewidth=0.8)
        axis.set_title(run["config"]["label"], fontsize=9)
        # Constant weights, recovered from running means, carry float32 noise:
        # show them flat rather than magnified.
        low, high = axis.get_ylim()
        if high - low < 1e-3:
            axis.set_ylim(low - 0.05, high + 0.05)
    for axis in axes.flat[len(runs) :]:
        axis.axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("step")
    axes.flat[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_metrics(rows, tasks, higher_is_better, path, max_pairs=3):
    """Per-task test metrics of every row, with the scalarization grid's points joined as a front.

    One panel per task pair (first task against each other, at most `max_pairs`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(tasks)
    pairs = [(tasks[0], other) for other in tasks[1 : max_pairs + 1]]
    figure, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    grid = [row for row in rows if row["method"].startswith("scalarization(")]
    for axis, (a, b) in zip(axes[0], pairs):
        if grid:
            front = sorted(grid, key=lambda row: row[a])
            axis.plot([r[a] for r in front], [r[b] for r in front], "o-", color="0.7", label="scalarization grid", zorder=1)
        for row in rows:
            if row not in grid:
                marker = "*" if row["method"] == SINGLE_TASK else "o"
                axis.scatter(row[a], row[b], marker=marker, s=60, zorder=2)
                axis.annotate(row["method"], (row[a], row[b]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(f"{a} ({'higher' if higher_is_better[a] else 'lower'} is better)")
        axis.set_ylabel(f"{b} ({'higher' if higher_is_better[b] else 'lower'} is better)")
        if grid:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
