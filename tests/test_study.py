"""`keras-mtl study`: the runs each claim needs, the verdict rules on hand-built results, and the command end to end."""

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

import keras_mtl_cli
from keras_mtl.benchmark import cache, compare, report, study

TASKS = ["left", "right"]
HIGHER = {"left": True, "right": True}
# Three paired seeds, two widths and two weightings: small enough to build by hand.
SMALL = dataclasses.replace(
    study.TINY, seeds=3, widths=(0.5, 1.0, 2.0), width_methods=("ew", "uw"), rivals=("ew", "uw")
)


def _t_interval(values):
    """The 95% t interval of the mean, from scipy (the reference for `report.paired_interval`)."""
    values = np.asarray(values, dtype=float)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return values.mean(), low, high


def _result(config, delta, validation_delta=None):
    """A run whose test Δm% against a baseline of 0.9 on both tasks is `delta` (accuracy 0.9·(1 − delta/100))."""
    test = {t: 0.9 * (1 - delta / 100) for t in TASKS}
    validation = test if validation_delta is None else {t: 0.9 * (1 - validation_delta / 100) for t in TASKS}
    return {"config": config, "test": test, "validation": validation}


def _baselines(configuration, **settings):
    return [
        _result(c, 0.0)
        for s in range(configuration.seeds)
        for c in study._single_task(configuration, TASKS, s, **settings)
    ]


def test_claim_runs_share_the_default_runs_between_claims():
    runs = study.claim_runs(SMALL, TASKS)
    keys = {claim: {study._key(c) for c in configs} for claim, configs in runs.items()}
    # Claim 1 per seed: 2 single-task runs, EW and UW, 1 temperature, 1 grid point (0.5, 0.5).
    assert len(keys[1]) == 3 * (2 + 2 + 1 + 1)
    # Claim 2 per seed and width: 2 single-task runs and 2 methods; width 1 is claim 1's.
    assert len(keys[2]) == 3 * 3 * 4 and len(keys[2] & keys[1]) == 3 * 4
    # Claim 3: EW at LR {1e-3, 3e-3} and weight decay {0, 0.1}; (1e-3, 0) is claim 1's EW run.
    assert len(keys[3] - keys[1]) == 3 * 2
    # Claim 6 reads claim 1's runs only.
    assert keys[6] <= keys[1]
    configs = [c for claim in runs.values() for c in claim]
    assert all(cache.run_path("", c) == cache.run_path("", json.loads(json.dumps(c))) for c in configs)


def test_spread_slopes_are_the_least_squares_slopes_against_log2_width():
    # log2 widths (−1, 0, 1): spreads (3, 2, 1) fall by 1 per doubling; (1, 1, 4): slope cov/var = 1.5.
    slopes = study.spread_slopes({0: [3.0, 2.0, 1.0], 1: [1.0, 1.0, 4.0]}, (0.5, 1.0, 2.0))
    assert slopes == pytest.approx({0: -1.0, 1: 1.5})


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        ([study.REPRODUCED, study.REPRODUCED], study.REPRODUCED),
        ([study.REPRODUCED, study.INCONCLUSIVE], study.INCONCLUSIVE),
        ([study.REPRODUCED, study.NOT_REPRODUCED], study.NOT_REPRODUCED),
        ([study.INCONCLUSIVE, study.NOT_REPRODUCED], study.NOT_REPRODUCED),
        ([], study.INCONCLUSIVE),
    ],
)
def test_combine(verdicts, expected):
    assert study.combine(verdicts) == expected


@pytest.mark.parametrize(
    "low, high, expected, bound, verdict",
    [
        (-3.0, -1.0, "below", 0.0, study.REPRODUCED),
        (-3.0, -1.0, "above", 0.0, study.NOT_REPRODUCED),
        (1.0, 3.0, "above", 0.0, study.REPRODUCED),
        (-1.0, 3.0, "above", 0.0, study.INCONCLUSIVE),
        # Claim 1's margin: below +1 is "comparable", an interval reaching past it is not yet.
        (0.2, 0.8, "below", 1.0, study.REPRODUCED),
        (0.2, 1.5, "below", 1.0, study.INCONCLUSIVE),
        (None, None, "below", 0.0, study.INCONCLUSIVE),  # one seed: no interval
    ],
)
def test_verdict_reads_which_side_of_the_bound_the_interval_lies(low, high, expected, bound, verdict):
    assert study._verdict({"mean": 0.0, "low": low, "high": high}, expected, bound) == verdict


def test_the_full_study_names_registered_methods_and_known_data():
    import keras_mtl
    from keras_mtl.datasets import qm9

    full = study.FULL
    methods = {
        *full.rivals,
        *full.width_methods,
        *full.grid_methods,
        *full.sam_methods,
        "uw_so",
        "sam",
        "hydalearn",
        "gcossim",
    }
    assert methods <= set(keras_mtl.available())
    assert {full.dataset, full.auxiliary_dataset} <= set(compare.DATASETS) and full.main_task in qm9.TARGETS
    assert full.rivals[0] == report.REFERENCE and 1.0 in full.widths
    assert len(full.learning_rates) == len(full.weight_decays)  # equal grids: the range favours neither


def test_single_task_claim_is_reproduced_when_ew_is_detectably_worse():
    ew_deltas = [1.0, 2.0, 1.5]
    results = _baselines(SMALL) + [_result(study._run(SMALL, "ew", "ew", {}, s), d) for s, d in enumerate(ew_deltas)]
    results += [_result(study._run(SMALL, "uw", "uw", {}, s), -d) for s, d in enumerate(ew_deltas)]
    finding = study.analyse_single_task(study.Results(SMALL, results, HIGHER), TASKS)
    mean, low, high = _t_interval(ew_deltas)  # 1.5 ± 4.303·0.5/√3: [0.26, 2.74], above 0
    assert finding["plot"]["Δm% vs single-task (test)"]["ew"] == pytest.approx({"mean": mean, "low": low, "high": high})
    assert finding["verdict"] == study.REPRODUCED
    flipped = [_result(r["config"], -_delta(r)) if r["config"]["method_id"] == "ew" else r for r in results]
    assert study.analyse_single_task(study.Results(SMALL, flipped, HIGHER), TASKS)["verdict"] == study.NOT_REPRODUCED


def _delta(result):
    return 100 * (1 - result["test"]["left"] / 0.9)


def test_width_claim_reads_the_slope_of_the_spread_across_methods():
    # At width w, EW's Δm% is 0 and UW's c_w·(1 + a seed's offset): the spread (std, ddof 1, of two values) is that over √2.
    gaps = {0.5: 4.0, 1.0: 2.0, 2.0: 1.0}
    offsets = [0.0, 0.3, -0.2]
    results = []
    for width, gap in gaps.items():
        results += _baselines(SMALL, width=width)
        for s, offset in enumerate(offsets):
            results.append(_result(study._run(SMALL, "ew", "ew", {}, s, width=width), 0.0))
            results.append(_result(study._run(SMALL, "uw", "uw", {}, s, width=width), gap * (1 + offset)))
    finding = study.analyse_width(study.Results(SMALL, results, HIGHER), TASKS)
    x = np.log2(list(gaps))
    slopes = [
        np.cov(x, [gap * (1 + offset) / np.sqrt(2) for gap in gaps.values()])[0, 1] / np.var(x, ddof=1)
        for offset in offsets
    ]
    mean, low, high = _t_interval(slopes)  # −1.5·(1 + offset)/√2 per seed: all below 0
    assert (
        finding["numbers"][-1]
        == f"slope of the spread per doubling of the width: {mean:+.2f} [{low:+.2f}, {high:+.2f}]"
    )
    assert finding["verdict"] == study.REPRODUCED


def test_uw_so_claim_chooses_temperature_and_grid_point_on_validation():
    configuration = dataclasses.replace(SMALL, temperatures=(1.0, 5.0), grid_step=0.25)
    points = study.grid_points(configuration, 2)
    assert [w for _, w in points] == [[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]]
    results = _baselines(configuration)
    for s in range(3):
        # T = 1 is the best on validation though the worse on test: it is chosen all the same (no peeking at test).
        results.append(
            _result(study._run(configuration, "uw_so", "uw_so", {"temperature": 1.0}, s), 9.0, validation_delta=-1.0)
        )
        results.append(
            _result(study._run(configuration, "uw_so", "uw_so", {"temperature": 5.0}, s), 0.0, validation_delta=0.0)
        )
        for i, (label, weights) in enumerate(points):
            results.append(
                _result(study._run(configuration, label, "scalarization", {"weights": weights}, s), 0.5 + i + 0.1 * s)
            )
        results.append(_result(study._run(configuration, "ew", "ew", {}, s), 3.0 + 0.1 * s))
        results.append(_result(study._run(configuration, "uw", "uw", {}, s), 2.0 - 0.1 * s))
    finding = study.analyse_uw_so(study.Results(configuration, results, HIGHER), TASKS)
    # T = 1 is chosen (validation −1 < 0); the grid's first point (validation 0.5 + 0.1s) is its best.
    assert finding["numbers"][0].startswith("UW-SO (T = 1) − best scalarization ((0.25,0.75)): +8.40")
    assert finding["verdict"] == study.NOT_REPRODUCED  # 8.4 above the 1-point margin, and worse than EW and UW


def test_tiny_study_with_a_fake_trainer_writes_the_report_and_resumes(tmp_path, monkeypatch, capsys):
    def fake_train_run(config, data, model_builder=None, callbacks=()):
        # Deterministic metrics that differ by method and seed, so every interval has a spread.
        offset = (sum(map(ord, json.dumps(config, sort_keys=True))) % 97) / 1000
        tasks = compare.run_data(config, data).tasks
        metrics = {t: 0.8 + offset for t in tasks}
        return {
            "config": config,
            "test": metrics,
            "validation": metrics,
            "diverged": None,
            "seconds_per_step": 0.0,
            "history": {},
        }

    monkeypatch.setattr(compare, "train_run", fake_train_run)
    argv = ["study", "--tiny", "--output", str(tmp_path)]
    first = study.run(keras_mtl_cli.parse(argv))
    assert first["trained"] == len(
        {study._key(c) for claim in study.claim_runs(study.TINY, TASKS).values() for c in claim}
    )
    assert [
        f["verdict"] in (study.REPRODUCED, study.NOT_REPRODUCED, study.INCONCLUSIVE) for f in first["findings"]
    ] == [True] * 6
    text = (tmp_path / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == [f"| {n}" for n in range(1, 7)]
    assert all(f"**{f['verdict']}**" in row for f, row in zip(first["findings"], rows))
    for n in range(1, 7):
        assert (tmp_path / f"claim{n}.png").read_bytes()[:4] == b"\x89PNG"
    # A second invocation trains only the run whose cache file was cut short.
    damaged = sorted((tmp_path / "runs").iterdir())[0]
    damaged.write_text(damaged.read_text()[:50])
    second = study.run(keras_mtl_cli.parse(argv))
    assert second["trained"] == 1
    assert f"training {damaged} again" in capsys.readouterr().out
    assert [f["numbers"] for f in second["findings"]] == [f["numbers"] for f in first["findings"]]


@pytest.mark.slow
def test_tiny_study_trains_end_to_end(tmp_path):
    """The real thing on the tiny configuration: every method builds and trains, the report is written."""
    result = study.run(keras_mtl_cli.parse(["study", "--tiny", "--output", str(tmp_path)]))
    assert result["trained"] > 0 and (tmp_path / "report.md").exists()
    assert all(
        np.isfinite(f["plot"][next(iter(f["plot"]))][label]["mean"])
        for f in result["findings"]
        for label in f["plot"][next(iter(f["plot"]))]
    )


def test_holm_adjusts_step_down_and_leaves_untested_comparisons_out():
    # Sorted 0.01, 0.03, 0.04 (m = 3): 3·0.01 = 0.03; max(0.03, 2·0.03) = 0.06; max(0.06, 1·0.04) = 0.06.
    np.testing.assert_allclose(report.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # A NaN (no test: one seed, or no spread) stays NaN and does not count: m = 2.
    np.testing.assert_allclose(report.holm([0.02, math.nan, 0.04]), [0.04, math.nan, 0.04])
    # 2·0.8 = 1.6 is capped at 1, and the larger p-value cannot fall below it.
    assert list(report.holm([0.9, 0.8])) == [1.0, 1.0]


def test_holm_verdicts_decide_a_family_by_adjusted_paired_t_tests():
    from scipy import stats

    ours = np.array([1.0, 2.0, 3.0, 4.0])
    theirs = {
        "clear": ours + [2.1, 1.9, 2.0, 2.05],
        "marginal": ours + [0.5, -0.1, 0.9, 0.4],
        "worse": ours - [1.0, 1.2, 0.9, 1.1],
    }
    differences = {name: ours - other for name, other in theirs.items()}
    p = {name: stats.ttest_rel(ours, other).pvalue for name, other in theirs.items()}
    assert p["marginal"] < 0.05 * 3 and p["marginal"] > 0.05 / 1  # decided alone at 5% or not: Holm must not decide it
    verdicts = study.holm_verdicts(differences, "below")
    assert verdicts == {"clear": study.REPRODUCED, "marginal": study.INCONCLUSIVE, "worse": study.NOT_REPRODUCED}


def test_a_study_rebuilds_from_its_runs_folder_without_loading_any_data(tmp_path, monkeypatch):
    def fake_train_run(config, data, model_builder=None, callbacks=()):
        offset = (sum(map(ord, json.dumps(config, sort_keys=True))) % 97) / 1000
        metrics = {t: 0.8 + offset for t in compare.run_data(config, data).tasks}
        return {
            "config": config,
            "test": metrics,
            "validation": metrics,
            "diverged": None,
            "seconds_per_step": 0.0,
            "history": {"weights": [1.0] * 100},
        }

    monkeypatch.setattr(compare, "train_run", fake_train_run)
    first = study.run(keras_mtl_cli.parse(["study", "--tiny", "--output", str(tmp_path)]))
    stored = [
        json.loads(path.read_text()) for path in (tmp_path / "runs").glob("*.json") if path.name != study.TASKS_FILE
    ]
    assert stored and all("history" not in result for result in stored)  # the folder keeps small results only
    report_text = (tmp_path / "report.md").read_text()

    def no_data(*args, **kwargs):
        raise AssertionError("a rebuild must not load data")

    monkeypatch.setattr(compare, "load_data", no_data)
    (tmp_path / "report.md").unlink()
    second = study.run(keras_mtl_cli.parse(["study", "--tiny", "--output", str(tmp_path)]))
    assert second["trained"] == 0 and [f["numbers"] for f in second["findings"]] == [
        f["numbers"] for f in first["findings"]
    ]
    # The same report, but for the line saying how long this invocation took.
    assert [line for line in (tmp_path / "report.md").read_text().splitlines() if "This invocation" not in line] == [
        line for line in report_text.splitlines() if "This invocation" not in line
    ]


def test_fmtl_keeps_each_variants_radius_chosen_on_validation():
    configuration = dataclasses.replace(SMALL, sam_rhos=(0.05, 0.2))
    results = _baselines(configuration)
    for s in range(3):
        results.append(_result(study._run(configuration, "pcgrad", "pcgrad", {}, s), 2.0 + 0.1 * s))
        # F-MTL: ρ = 0.2 best on validation (worse on test); naive: ρ = 0.05.
        results.append(_result(study._sam(configuration, "pcgrad", "fmtl", 0.05, s), -5.0, validation_delta=1.0))
        results.append(
            _result(study._sam(configuration, "pcgrad", "fmtl", 0.2, s), 1.0 + 0.2 * s, validation_delta=0.0)
        )
        results.append(
            _result(study._sam(configuration, "pcgrad", "naive", 0.05, s), 3.0 - 0.1 * s, validation_delta=0.0)
        )
        results.append(_result(study._sam(configuration, "pcgrad", "naive", 0.2, s), -9.0, validation_delta=2.0))
    finding = study.analyse_fmtl(study.Results(configuration, results, HIGHER), TASKS)
    assert "F-MTL ρ = 0.2, naive ρ = 0.05" in finding["experiment"]
    # F-MTL − PCGrad per seed: (1 − 2), (1.2 − 2.1), (1.4 − 2.2) = −1, −0.9, −0.8.
    assert finding["numbers"][0].startswith("F-MTL(pcgrad) − pcgrad: -0.90 [")
