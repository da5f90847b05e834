"""`keras-mtl benchmark`: Δm%, ranks, paired differences from EW, the choice of settings, pairing, and the command end to end."""

import csv
import io
import json
import math

import keras
import numpy as np
import pytest
from scipy import stats

import keras_mtl_cli
from keras_mtl import datasets
from keras_mtl.benchmark import compare, report

HIGHER = {"acc": True, "err": False}


def test_delta_m_matches_hand_computed_values():
    # acc: −(0.9 − 0.8)/0.8 = −0.125; err: +(2.0 − 2.5)/2.5 = −0.2; mean × 100 = −16.25.
    assert report.delta_m({"acc": 0.9, "err": 2.0}, {"acc": 0.8, "err": 2.5}, HIGHER) == pytest.approx(-16.25)
    # Worse on both: −(0.6 − 0.8)/0.8 = +0.25; (3.0 − 2.5)/2.5 = +0.2; mean × 100 = +22.5.
    assert report.delta_m({"acc": 0.6, "err": 3.0}, {"acc": 0.8, "err": 2.5}, HIGHER) == pytest.approx(22.5)
    assert report.delta_m({"acc": 0.8, "err": 2.5}, {"acc": 0.8, "err": 2.5}, HIGHER) == 0.0
    assert math.isnan(report.delta_m({"acc": 0.9}, {"acc": 0.8, "err": 2.5}, HIGHER))


def test_mean_ranks_rank_each_task_in_its_direction_and_share_ties():
    scores = {"x": {"acc": 0.9, "err": 1.0}, "y": {"acc": 0.8, "err": 0.5}, "z": {"acc": 0.9, "err": 2.0}}
    # acc (higher better): x and z tie for 1–2 (1.5 each), y 3; err (lower better): y 1, x 2, z 3.
    assert report.mean_ranks(scores, HIGHER) == {"x": 1.75, "y": 2.0, "z": 2.25}


def test_mean_ranks_put_nan_and_missing_metrics_last():
    scores = {
        "x": {"acc": 0.9, "err": math.nan},
        "y": {"acc": math.nan, "err": 0.5},
        "z": {"acc": 0.1, "err": 2.0},
        "w": {"acc": 0.5},
    }
    # acc: x 1, w 2, z 3, y (NaN) 4; err: y 1, z 2, x (NaN) and w (missing) tie for 3–4 (3.5 each).
    assert report.mean_ranks(scores, HIGHER) == {"x": 2.25, "y": 2.5, "z": 2.5, "w": 2.75}


def test_paired_interval_matches_a_hand_computed_case_and_scipy():
    # d = (1, 3): mean 2, s = √2, s/√2 = 1; t_{0.975, 1} = 12.7062 (tables).
    mean, low, high = report.paired_interval([1.0, 3.0])
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - 12.7062047, 2.0 + 12.7062047))
    rng = np.random.default_rng(0)
    method, ew = rng.normal(size=5), rng.normal(size=5)
    reference = stats.ttest_rel(method, ew).confidence_interval(0.95)
    assert report.paired_interval(method - ew)[1:] == pytest.approx((reference.low, reference.high), rel=1e-12)
    assert report.paired_interval([0.7]) == (0.7, None, None)
    assert report.paired_interval([-2.0, -2.0, -2.0]) == (-2.0, -2.0, -2.0)


@pytest.mark.parametrize(
    "mean, low, high, expected",
    [
        (-4.0, -6.5, -1.5, report.BETTER),
        (4.0, 1.5, 6.5, report.WORSE),
        (2.3, -1.5, 6.1, report.UNDECIDED),
        (0.0, 0.0, 0.0, report.UNDECIDED),
        (-5.0, -5.0, -5.0, report.NO_SPREAD),
        (0.7, None, None, report.ONE_SEED),
        (math.nan, math.nan, math.nan, report.NOT_FINITE),
    ],
)
def test_verdicts(mean, low, high, expected):
    assert report.verdict(mean, low, high) == expected


def _run(label, lr, seed, validation, test, seconds=0.01, method_id=None, task=None, kwargs=None):
    config = {
        "label": label,
        "method_id": method_id or label,
        "method_kwargs": kwargs or ({"task": task} if task else {}),
        "learning_rate": lr,
        "seed": seed,
    }
    return {"config": config, "validation": validation, "test": test, "seconds_per_step": seconds}


def _baselines(seeds=(0,)):
    # Single-task baselines: acc 0.8 and err 2.0 on test, so Δm% = −50 (acc − 0.8)/0.8 + 25 (err − 2)/2.
    return [
        _run("single_task:acc", 0.1, s, {"acc": 0.8}, {"acc": 0.8}, method_id=report.SINGLE_TASK, task="acc")
        for s in seeds
    ] + [
        _run("single_task:err", 0.1, s, {"err": 2.0}, {"err": 2.0}, method_id=report.SINGLE_TASK, task="err")
        for s in seeds
    ]


def _acc_for(delta):
    """The accuracy that gives Δm% = `delta` at err 2.0: −50 (acc − 0.8)/0.8 = delta."""
    return 0.8 - 0.016 * delta


def test_summarize_pairs_methods_with_ew_by_seed():
    validation = {"acc": 0.8, "err": 2.0}
    ew_deltas = {0: 0.0, 1: 10.0, 2: -10.0}
    # "paired" is better than EW by 3, 4 and 5 points on seeds 0, 1, 2, though EW's spread over seeds is larger:
    # only pairing by seed detects it. "noisy" differs from EW by +1, +2, +4.
    paired = {s: ew_deltas[s] - d for s, d in zip(range(3), (3.0, 4.0, 5.0))}
    noisy = {s: ew_deltas[s] + d for s, d in zip(range(3), (1.0, 2.0, 4.0))}
    runs = [
        _run(label, 0.1, seed, validation, {"acc": _acc_for(deltas[seed]), "err": 2.0})
        for label, deltas in (("ew", ew_deltas), ("paired", paired), ("noisy", noisy))
        for seed in (2, 0, 1)  # out of order: pairs are matched by seed, not by position
    ]
    rows = {row["method"]: row for row in report.summarize(runs, _baselines(), HIGHER)}
    for label, deltas in (("paired", paired), ("noisy", noisy)):
        reference = stats.ttest_rel(
            [deltas[s] for s in range(3)], [ew_deltas[s] for s in range(3)]
        ).confidence_interval(0.95)
        row = rows[label]
        assert row["vs_ew"] == pytest.approx(np.mean([deltas[s] - ew_deltas[s] for s in range(3)]))
        assert (row["vs_ew_low"], row["vs_ew_high"]) == pytest.approx((reference.low, reference.high))
    assert rows["paired"]["verdict"] == report.BETTER and rows["paired"]["vs_ew_high"] < 0
    assert rows["noisy"]["verdict"] == report.UNDECIDED
    assert rows["ew"]["verdict"] == "reference" and rows[report.SINGLE_TASK]["verdict"] is None


def test_summarize_with_one_seed_gives_no_interval():
    runs = [
        _run("ew", 0.1, 0, {"acc": 0.8, "err": 2.0}, {"acc": 0.8, "err": 2.0}),
        _run("m", 0.1, 0, {"acc": 0.8, "err": 2.0}, {"acc": 0.7, "err": 2.0}),
    ]
    row = report.summarize(runs, _baselines(), HIGHER)[2]
    assert row["verdict"] == report.ONE_SEED and row["vs_ew"] == pytest.approx(6.25) and row["vs_ew_low"] is None
    assert "(n/a, 1 seed)" in _table_text(report.summarize(runs, _baselines(), HIGHER))


def test_summarize_picks_learning_rate_and_temperature_by_validation_not_test():
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
        # UW-SO: T = 3 is best on validation, T = 1 on test; a diverged T = 5 is never chosen.
        *(
            _run(
                "uw_so",
                0.1,
                0,
                {"acc": val, "err": 1.0},
                {"acc": test, "err": 2.5},
                method_id="uw_so",
                kwargs={"temperature": t},
            )
            for t, val, test in [(1.0, 0.7, 0.95), (3.0, 0.85, 0.7), (5.0, math.nan, math.nan)]
        ),
    ]
    rows = {row["method"]: row for row in report.summarize(runs, baselines, HIGHER)}
    assert list(rows) == [report.SINGLE_TASK, "m", "ew", "uw_so"]
    assert (
        rows["m"]["learning_rate"] == 0.1 and rows["m"]["delta_m"] == pytest.approx(22.5) and rows["m"]["tuned"] == ""
    )
    assert rows["uw_so"]["tuned"] == "temperature=3" and rows["uw_so"]["acc"] == 0.7
    assert rows["ew"]["seeds"] == 2 and rows["ew"]["delta_m"] == pytest.approx(0.0)
    assert rows["m"]["time_vs_ew"] == pytest.approx(0.03 / 0.015)
    assert rows[report.SINGLE_TASK]["acc"] == 0.8 and rows[report.SINGLE_TASK]["rank"] is None
    assert "temperature=3" in _table_text(list(rows.values()))


def test_a_diverged_method_ranks_last_and_gets_no_verdict():
    runs = [
        _run(label, 0.1, seed, {"acc": 0.8, "err": 2.0}, test)
        for label, test in (
            ("ew", {"acc": 0.8, "err": 2.0}),
            ("diverged", {"acc": math.nan, "err": math.nan}),
            ("worse", {"acc": 0.1, "err": 9.0}),
        )
        for seed in (0, 1)
    ]
    rows = {row["method"]: row for row in report.summarize(runs, _baselines(), HIGHER)}
    assert rows["diverged"]["rank"] == 3.0 and rows["worse"]["rank"] == 2.0
    assert rows["diverged"]["verdict"] == report.NOT_FINITE


def _table_text(rows):
    file = io.StringIO()
    report.print_table(report.benchmark_table(rows, list(HIGHER)), file=file)
    return file.getvalue()


def test_the_printed_table_keeps_every_column_in_a_file():
    runs = [
        _run(label, 0.1, s, {"acc": 0.8, "err": 2.0}, {"acc": _acc_for(d + s), "err": 2.0})
        for label, d in (("ew", 0.0), ("m", -5.0))
        for s in (0, 1)
    ]
    text = _table_text(report.summarize(runs, _baselines(), HIGHER))
    header, *lines = text.strip().splitlines()
    for column in ("method", "lr", "acc", "err", "Δm% ↓", "vs EW, 95% CI", "verdict", "rank ↓", "time/step × ew"):
        assert column in header
    m = next(line for line in lines if line.startswith("m "))
    # m is 5 points better than EW on both seeds: a zero-width interval at −5, which decides nothing.
    assert "-5.00 [-5.00, -5.00]" in m and report.NO_SPREAD in m


def _tiny_data():
    # 70 training examples in batches of 16: four full batches and a short one of 6.
    return datasets.gradnorm_toy(num_train=70, num_validation=24, num_test=24, input_dim=6, output_dim=2)


def _config(method_id, seed, learning_rate=1e-3, epochs=1, kwargs=None):
    return {
        "dataset": "tiny",
        "max_examples": None,
        "epochs": epochs,
        "batch_size": 16,
        "label": method_id,
        "method_id": method_id,
        "method_kwargs": kwargs or {},
        "seed": seed,
        "learning_rate": learning_rate,
    }


def test_training_batches_depend_only_on_the_seed():
    data = _tiny_data()

    def order(seed):
        # As in `train_run`: the seed is set, the model built (drawing its initial weights), then the pipeline made.
        keras.utils.set_random_seed(seed)
        compare.build_model(data, data.tasks)
        batches = compare.training_batches(data, _config("ew", seed))
        # Two epochs: the reshuffle of the second must be the same too.
        return [np.concatenate([x[:, 0] for x, _ in batches]) for _ in range(2)]

    first = order(0)
    keras.random.normal((3,), seed=keras.random.SeedGenerator(7))  # what another run would leave behind
    again = order(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])  # reshuffled each epoch
    assert not np.array_equal(first[0], order(1)[0])


class _InitialWeights(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


class _UncertaintyWeights(keras.callbacks.Callback):
    """UW's weights as each step uses them: ½·exp(−s) of the log-variances before the step, in float64."""

    def on_train_begin(self, logs=None):
        self.steps = []

    def on_train_batch_begin(self, batch, logs=None):
        (log_variances,) = [v for v in self.model.variables if "log_variances" in v.path]
        self.steps.append(0.5 * np.exp(-np.asarray(log_variances, dtype=np.float64)))


@pytest.fixture(scope="module")
def uw_run():
    """A UW run of seed 0 with its initial weights and its weights at every step recorded independently."""
    start, weights = _InitialWeights(), _UncertaintyWeights()
    # A large learning rate, so that the weights move from step to step.
    result = compare.train_run(_config("uw", 0, learning_rate=0.05, epochs=2), _tiny_data(), callbacks=[start, weights])
    return result, start.weights, weights.steps


def test_runs_of_one_seed_start_from_the_same_weights_whatever_the_method(uw_run):
    data = _tiny_data()
    ew = _InitialWeights()
    compare.train_run(_config("ew", 0), data, callbacks=[ew])
    keras.utils.set_random_seed(1)
    other_seed = compare.build_model(data, data.tasks).get_weights()
    # The model's own weights; UW's log-variances, its state, come after them.
    assert len(ew.weights) == len(other_seed)
    assert all(np.array_equal(a, b) for a, b in zip(ew.weights, uw_run[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(ew.weights, other_seed))


def test_recorded_weights_are_those_of_every_step_short_last_batch_included(uw_run):
    result, _, steps = uw_run
    recorded = np.array(list(result["history"]["weights"].values())).T
    assert recorded.shape == (10, 2)  # 5 steps per epoch, the 5th of 6 examples
    assert np.ptp(recorded[:, 0]) > 0.05
    np.testing.assert_allclose(recorded, np.array(steps), rtol=1e-5)


def test_a_run_that_diverges_is_a_result_with_nan_metrics_not_a_crash():
    result = compare.train_run(_config("ew", 0, learning_rate=1e12, epochs=2), _tiny_data())
    assert result["diverged"].startswith("keras_mtl: the loss of task 'task_")
    assert all(math.isnan(value) for value in [*result["test"].values(), *result["validation"].values()])
    assert len(result["history"]["weights"]["task_0"]) < 10  # stopped during the first epoch


def test_auxiliary_task_methods_take_the_first_task_as_main():
    specs = compare.method_specs(["hydalearn", "slgrad", "ew", "uw_so"], [1, 3], False, ["left", "right"])
    assert specs == [
        ("hydalearn", "hydalearn", {"main_task": "left"}),
        ("slgrad", "slgrad", {"main_task": "left"}),
        ("ew", "ew", {}),
        ("uw_so", "uw_so", {"temperature": 1}),
        ("uw_so", "uw_so", {"temperature": 3}),
    ]


def _benchmark(output, *extra):
    argv = [
        "benchmark",
        "--dataset",
        "gradnorm_toy",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--max-examples",
        "40",
        "--batch-size",
        "16",
    ]
    return compare.run(keras_mtl_cli.parse(argv + ["--output", str(output), *extra]))


def test_benchmark_writes_its_outputs_resumes_and_retrains_a_corrupt_cache_file(tmp_path, capsys):
    # Krum needs 3 tasks or more: the toy's 2 leave it out with a note.
    first = _benchmark(
        tmp_path,
        "--methods",
        "ew",
        "uw_so",
        "krum",
        "--temperatures",
        "1",
        "3",
        "--tensorboard",
        str(tmp_path / "logs"),
    )
    out, err = capsys.readouterr()
    assert "skipping krum" in out
    assert "UW-SO temperature from 1 3" in out
    # Two tasks' baselines, EW, and UW-SO at two temperatures.
    assert first["trained"] == 5
    assert "run 5/5 uw_so temperature=3.0 seed 0" in err
    methods = [row["method"] for row in first["rows"]]
    assert methods == [report.SINGLE_TASK, "ew", "uw_so"]
    uw_so = first["rows"][2]
    assert uw_so["tuned"] in ("temperature=1", "temperature=3") and uw_so["verdict"] == report.ONE_SEED
    assert f"{uw_so['tuned']} " in out and "(n/a, 1 seed)" in out
    with open(tmp_path / "results.csv") as file:
        assert [row["method"] for row in csv.DictReader(file)] == methods
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in saved["table"]] == methods and len(saved["runs"]) == 5
    for plot in ("weights.png", "validation.png", "metrics.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    run = next(r for r in saved["runs"] if r["config"]["label"] == "uw_so")
    # 40 examples in batches of 16: 3 steps; UW-SO's weights sum to 1 at every step.
    assert [len(w) for w in run["history"]["weights"].values()] == [3, 3]
    np.testing.assert_allclose(np.sum(list(run["history"]["weights"].values()), axis=0), 1.0, rtol=1e-5)
    assert [len(curve) for curve in run["history"]["validation"].values()] == [1, 1]
    assert run["validation"] == {task: curve[-1] for task, curve in run["history"]["validation"].items()}
    logs = sorted((tmp_path / "logs").iterdir())
    assert len(logs) == 5 and all(list(folder.rglob("events.out.tfevents.*")) for folder in logs)

    # Resuming trains nothing, except a run whose file a killed process cut short.
    runs = sorted((tmp_path / "runs").iterdir())
    truncated = next(path for path in runs if path.name.startswith("ew_"))
    truncated.write_text(truncated.read_text()[:100])
    mtimes = {path: path.stat().st_mtime_ns for path in runs if path != truncated}
    second = _benchmark(tmp_path, "--methods", "ew", "uw_so", "--temperatures", "1", "3")
    out, _ = capsys.readouterr()
    assert second["trained"] == 1
    assert f"training {truncated} again: it is not readable JSON" in out
    assert (
        sorted((tmp_path / "runs").iterdir()) == runs and {path: path.stat().st_mtime_ns for path in mtimes} == mtimes
    )
    assert json.loads(truncated.read_text())["config"]["method_id"] == "ew"
    # The retrained run is the same run: same metrics, to the bit (only its step time differs).
    timing = ("seconds_per_step", "time_vs_ew")
    assert [{k: v for k, v in row.items() if k not in timing} for row in second["rows"]] == [
        {k: v for k, v in row.items() if k not in timing} for row in first["rows"]
    ]


def test_width_scales_every_shared_layer_and_a_zero_weight_decay_changes_nothing():
    data = _tiny_data()
    dense = [
        layer.units
        for layer in compare.build_model(data, data.tasks, width=0.5).layers
        if isinstance(layer, keras.layers.Dense)
    ]
    # The MLP trunk's 128 and 64 units halved; the two heads keep their 2 outputs.
    assert dense == [64, 32, 2, 2]
    image = datasets.MultiTaskData(
        *[data.train.map(lambda x, y: (keras.ops.zeros((28, 28, 1)), y))] * 3, tasks=data.tasks
    )
    filters = [
        layer.filters
        for layer in compare.build_model(image, data.tasks, width=2.0).layers
        if isinstance(layer, keras.layers.Conv2D)
    ]
    assert filters == [32, 64]
    # A decay of 0 is the benchmark's run (no `weight_decay` key), to the bit; a decay of 0.5 changes the result.
    plain = compare.train_run(_config("ew", 0), data)
    zero, decayed = (compare.train_run({**_config("ew", 0), "weight_decay": wd}, data) for wd in (0.0, 0.5))
    assert zero["test"] == plain["test"] and decayed["test"] != plain["test"]
