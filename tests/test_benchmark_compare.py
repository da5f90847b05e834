"""`keras-mtl benchmark`: Δm%, ranks, learning-rate choice, and the command end to end."""

import csv
import json

import pytest

from keras_mtl.benchmark import compare, report

HIGHER = {"acc": True, "err": False}


def test_delta_m_matches_hand_computed_values():
    # acc: −(0.9 − 0.8)/0.8 = −0.125; err: +(2.0 − 2.5)/2.5 = −0.2; mean × 100 = −16.25.
    assert report.delta_m({"acc": 0.9, "err": 2.0}, {"acc": 0.8, "err": 2.5}, HIGHER) == pytest.approx(-16.25)
    # Worse on both: −(0.6 − 0.8)/0.8 = +0.25; (3.0 − 2.5)/2.5 = +0.2; mean × 100 = +22.5.
    assert report.delta_m({"acc": 0.6, "err": 3.0}, {"acc": 0.8, "err": 2.5}, HIGHER) == pytest.approx(22.5)
    assert report.delta_m({"acc": 0.8, "err": 2.5}, {"acc": 0.8, "err": 2.5}, HIGHER) == 0.0


def test_mean_ranks_rank_each_task_in_its_direction_and_share_ties():
    scores = {"x": {"acc": 0.9, "err": 1.0}, "y": {"acc": 0.8, "err": 0.5}, "z": {"acc": 0.9, "err": 2.0}}
    # acc (higher better): x and z tie for 1–2 (1.5 each), y 3; err (lower better): y 1, x 2, z 3.
    assert report.mean_ranks(scores, HIGHER) == {"x": 1.75, "y": 2.0, "z": 2.25}


def _run(label, lr, seed, validation, test, seconds=0.01, method_id=None, task=None):
    config = {"label": label, "method_id": method_id or label, "method_kwargs": {"task": task} if task else {}, "learning_rate": lr, "seed": seed}
    return {"config": config, "validation": validation, "test": test, "seconds_per_step": seconds}


def test_summarize_picks_learning_rates_by_validation_not_test():
    baselines = [
        _run("single_task:acc", lr, 0, {"acc": val}, {"acc": 0.8}, method_id=report.SINGLE_TASK, task="acc")
        for lr, val in [(0.1, 0.5), (0.01, 0.9)]
    ] + [_run("single_task:err", 0.1, 0, {"err": 1.0}, {"err": 2.5}, method_id=report.SINGLE_TASK, task="err")]
    runs = [
        # At lr 0.1 the method is better on validation but worse on test: 0.1 must be chosen.
        _run("m", 0.1, 0, {"acc": 0.9, "err": 1.0}, {"acc": 0.6, "err": 3.0}, seconds=0.03),
        _run("m", 0.01, 0, {"acc": 0.5, "err": 1.0}, {"acc": 0.9, "err": 2.0}, seconds=0.03),
        _run("ew", 0.1, 0, {"acc": 0.8, "err": 1.0}, {"acc": 0.8, "err": 2.5}, seconds=0.01),
        _run("ew", 0.1, 1, {"acc": 0.8, "err": 1.0}, {"acc": 0.8, "err": 2.5}, seconds=0.02),
    ]
    rows = {row["method"]: row for row in report.summarize(runs, baselines, HIGHER)}
    assert list(rows) == [report.SINGLE_TASK, "m", "ew"]
    assert rows["m"]["learning_rate"] == 0.1 and rows["m"]["delta_m"] == pytest.approx(22.5)
    assert rows["ew"]["seeds"] == 2 and rows["ew"]["delta_m"] == pytest.approx(0.0)
    assert rows["m"]["time_vs_ew"] == pytest.approx(0.03 / 0.015)
    assert rows["ew"]["rank"] == 1.0 and rows["m"]["rank"] == 2.0
    assert rows[report.SINGLE_TASK]["acc"] == 0.8 and rows[report.SINGLE_TASK]["rank"] is None


def _benchmark(output, *extra):
    argv = ["--dataset", "gradnorm_toy", "--seeds", "1", "--epochs", "1", "--max-examples", "64", "--batch-size", "16"]
    return compare.main(argv + ["--output", str(output), *extra])


def test_benchmark_writes_its_outputs_and_resumes_without_retraining(tmp_path, capsys):
    first = _benchmark(tmp_path, "--methods", "ew", "uw_so", "hydalearn", "--temperatures", "1", "3")
    out, err = capsys.readouterr()
    assert "skipping hydalearn" in out
    assert "run 1/5" in err and "left" in err  # the progress line
    # Two single-task baselines and three method rows, each a printed table line.
    assert first["trained"] == 5
    methods = [row["method"] for row in first["rows"]]
    assert methods == [report.SINGLE_TASK, "ew", "uw_so(T=1)", "uw_so(T=3)"]
    table = out[out.index("method ") :]
    for method in methods:
        assert f"\n{method} " in table
    assert "Δm%" in table and "time/step × ew" in table
    with open(tmp_path / "results.csv") as file:
        assert [row["method"] for row in csv.DictReader(file)] == methods
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in saved["table"]] == methods and len(saved["runs"]) == 5
    for plot in ("weights.png", "metrics.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    # uw_so's weights are recorded per step: 64 examples in batches of 16.
    uw_so = next(r for r in saved["runs"] if r["config"]["label"] == "uw_so(T=1)")
    assert [len(w) for w in uw_so["history"]["weights"].values()] == [4, 4]
    assert sum(w[0] for w in uw_so["history"]["weights"].values()) == pytest.approx(1.0, abs=1e-5)

    runs = sorted((tmp_path / "runs").iterdir())
    mtimes = [path.stat().st_mtime_ns for path in runs]
    second = _benchmark(tmp_path, "--methods", "ew", "uw_so", "--temperatures", "1", "3")
    assert second["trained"] == 0
    assert sorted((tmp_path / "runs").iterdir()) == runs and [p.stat().st_mtime_ns for p in runs] == mtimes
    assert second["rows"] == first["rows"]

    # A new configuration trains only what it lacks: the baselines are reused.
    third = _benchmark(tmp_path, "--methods", "ew", "--scalarization-grid", "on")
    assert third["trained"] == 9  # the 0.1 grid of two tasks
    assert [row["method"] for row in third["rows"]][:3] == [report.SINGLE_TASK, "ew", "scalarization(0.1,0.9)"]


def test_unknown_methods_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        _benchmark(tmp_path, "--methods", "no_such_method")
