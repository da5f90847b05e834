"""`keras-mtl speed`: end to end on a tiny configuration (the numbers themselves are not asserted), the peer comparison's
arithmetic, and the TorchJD side (its child process, when torch and torchjd are installed)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mtl
import keras_mtl_cli
from keras_mtl.benchmark import speed

HAS_TORCHJD = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("torchjd") is not None
needs_torchjd = pytest.mark.skipif(
    not HAS_TORCHJD, reason="torch and torchjd not installed (pip install 'keras_mtl[torchjd]')"
)


def _speed(*argv, load=lambda: 0.0):
    return speed.run(keras_mtl_cli.parse(["speed", *argv]), load=load)


def test_speed_table_prints_every_column_on_a_tiny_grid(capsys):
    rows = _speed(
        "--models", "mlp", "--tasks", "2", "--representation-tasks", "3", "--methods", "ew", "mean", "sam+mean",
        "--steps", "1", "--repeats", "2", "--fit-steps", "2", "--steps-per-execution", "1", "2",
    )  # fmt: skip
    by_key = {(row["mode"], row["K"], row["method"]): row for row in rows}
    assert list(by_key) == [
        ("stock", 2, "keras"), ("loss", 2, "ew"), ("parameters", 2, "mean"), ("parameters", 2, "sam+mean"),
        ("stock", 3, "keras"), ("loss", 3, "ew"), ("representation", 3, "mean"),
    ]  # fmt: skip
    assert by_key[("loss", 2, "ew")]["× ew"] == 1.0 and by_key[("parameters", 2, "mean")]["× mean"] == 1.0
    # Expected costs: K = 2 backward passes are (1 + 2·2)/3 plain steps; per-task SAM adds K.
    sam = by_key[("parameters", 2, "sam+mean")]
    assert math.isclose(sam["× expected"], sam["× ew"] / (5 / 3 + 2))
    # The stock model is each fit column's denominator.
    assert by_key[("stock", 2, "keras")]["× keras spe=2"] == 1.0
    assert math.isclose(sam["× keras spe=2"], sam["fit ms spe=2"] / by_key[("stock", 2, "keras")]["fit ms spe=2"])
    assert all(
        row["ms/step"] > 0 and row["fit ms spe=1"] > 0 and row["load"] == 0.0 and row["busy"] == "" for row in rows
    )
    title, conditions, header, *lines = capsys.readouterr().out.strip().splitlines()
    # The title names the backend that ran the steps, and how the figures were taken.
    assert f"backend {keras.backend.backend()}" in title and "median of 2 interleaved rounds of 1 steps" in conditions
    assert header.split() == [
        "model", "mode", "K", "method", "ms/step", "±%", "compile", "s", "×", "ew", "×", "expected", "×", "mean",
        "fit", "ms", "spe=1", "×", "keras", "spe=1", "fit", "ms", "spe=2", "×", "keras", "spe=2", "load", "busy",
    ]  # fmt: skip
    assert len(lines) == len(rows) and any(line.split()[:4] == ["mlp", "parameters", "2", "sam+mean"] for line in lines)


def test_grid_puts_each_method_in_its_mode_and_skips_what_cannot_run():
    cells = speed.grid(["mlp"], [2], [3], ["ew", "uw", "pcgrad", "hydalearn", "sam", "sam+mean", "krum"])
    assert cells == [
        ("mlp", "stock", 2, "keras"), ("mlp", "loss", 2, "ew"), ("mlp", "parameters", 2, "mean"),
        ("mlp", "loss", 2, "uw"), ("mlp", "parameters", 2, "pcgrad"), ("mlp", "parameters", 2, "hydalearn"),
        ("mlp", "loss", 2, "sam"), ("mlp", "parameters", 2, "sam+mean"),  # Krum needs K >= 3: not at K = 2
        # Exact HydaLearn and SAM move parameters: no representation mode.
        ("mlp", "stock", 3, "keras"), ("mlp", "loss", 3, "ew"), ("mlp", "representation", 3, "mean"),
        ("mlp", "representation", 3, "pcgrad"), ("mlp", "representation", 3, "krum"),
    ]  # fmt: skip
    # Without a gradient method, no `mean` baseline in parameter mode.
    assert speed.grid(["cnn"], [2], [], ["ew", "uw"]) == [
        ("cnn", "stock", 2, "keras"),
        ("cnn", "loss", 2, "ew"),
        ("cnn", "loss", 2, "uw"),
    ]


def test_schedule_interleaves_libraries_within_a_cell_and_cells_within_a_round():
    a, b = ("mlp", "loss", 2, "ew"), ("mlp", "parameters", 2, "mean")
    order = speed.schedule(
        [(a, ["keras_mtl", "torchjd"]), (b, ["keras_mtl", "torchjd", "keras_mtl batched"])], repeats=2
    )
    assert order == [
        (0, a, "keras_mtl"), (0, a, "torchjd"), (0, b, "keras_mtl"), (0, b, "torchjd"), (0, b, "keras_mtl batched"),
        (1, a, "keras_mtl"), (1, a, "torchjd"), (1, b, "keras_mtl"), (1, b, "torchjd"), (1, b, "keras_mtl batched"),
    ]  # fmt: skip


def test_groups_gather_each_model_and_task_count_in_order_of_first_appearance():
    cells = speed.grid(["mlp"], [2, 3], [2], ["ew", "mean"])
    assert [[cell[1:] for cell in group] for group in speed.groups(cells)] == [
        [("stock", 2, "keras"), ("loss", 2, "ew"), ("parameters", 2, "mean"), ("representation", 2, "mean")],
        [("stock", 3, "keras"), ("loss", 3, "ew"), ("parameters", 3, "mean")],
    ]


class FakeTimer:
    """A timer that logs its calls and answers fixed seconds."""

    def __init__(self, name, log, first, samples):
        self.name, self.log, self.first, self.samples = name, log, first, list(samples)

    def prepare(self):
        self.log.append(("prepare", self.name))
        return self.first

    def sample(self):
        self.log.append(("sample", self.name))
        return self.samples.pop(0)


def _readings(*values):
    """A load reader that answers `values` in turn (one before and one after each timed round)."""
    values = iter(values)
    return lambda: next(values)


def test_measure_prepares_each_timer_once_then_samples_in_schedule_order():
    log = []
    cell = ("mlp", "loss", 2, "ew")
    timers = {
        (cell, "a"): FakeTimer("a", log, 1.0, [{"step": 0.1}, {"step": 0.3}]),
        (cell, "b"): FakeTimer("b", log, 2.0, [{"step": 0.2}, {"step": 0.2}]),
    }
    results = speed.measure(
        timers,
        speed.schedule([(cell, ["a", "b"])], 2),
        threshold=2.0,
        load=_readings(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    )
    assert log == [
        ("prepare", "a"),
        ("sample", "a"),
        ("prepare", "b"),
        ("sample", "b"),
        ("sample", "a"),
        ("sample", "b"),
    ]
    assert results[(cell, "a")]["first"] == 1.0 and results[(cell, "a")]["load"] == 0.6  # a's highest reading
    assert results[(cell, "b")]["load"] == 0.8
    median, spread = speed.summary(results[(cell, "a")])
    assert math.isclose(median, 0.2) and math.isclose(spread, (0.3 - 0.1) / 0.2)


def _results(load_of_mean):
    """`measure`'s results for a stock cell, `ew` and `mean`, the mean cell read at `load_of_mean`."""
    cells = [("mlp", "stock", 2, "keras"), ("mlp", "loss", 2, "ew"), ("mlp", "parameters", 2, "mean")]
    fit = [{"step": 0.010, ("fit", 1): 0.020}, {"step": 0.020, ("fit", 1): 0.030}, {"step": 0.040, ("fit", 1): 0.060}]
    libraries = [speed.STOCK, speed.KERAS_MTL, speed.KERAS_MTL]
    return {
        (cell, library): {"first": 1.0, "samples": [f], "load": load}
        for cell, library, f, load in zip(cells, libraries, fit, [0.5, 0.5, load_of_mean])
    }


def test_rows_divide_by_ew_mean_and_the_stock_fit_and_mark_busy_cells():
    rows = speed.rows_of(_results(load_of_mean=2.5), threshold=2.0, executions=[1])
    stock, ew, mean = rows
    assert stock["mode"] == "stock" and math.isclose(stock["× ew"], 0.5) and stock["× keras spe=1"] == 1.0
    assert math.isclose(ew["fit ms spe=1"], 30.0) and math.isclose(ew["× keras spe=1"], 1.5)
    assert math.isclose(mean["× ew"], 2.0) and mean["× mean"] == 1.0 and math.isclose(mean["× keras spe=1"], 3.0)
    # K = 2 backward passes: (1 + 2·2)/3 plain steps.
    assert math.isclose(mean["× expected"], 2.0 / (5 / 3))
    assert math.isclose(mean["compile s"], 1.0 - 0.040)
    assert [row["busy"] for row in rows] == ["", "", "busy"]
    # Busy is strictly above the threshold.
    assert [row["busy"] for row in speed.rows_of(_results(load_of_mean=2.0), threshold=2.0)] == ["", "", ""]
    assert "BUSY: 1 of 3 cells measured while the machine was busy: not for publication" in speed.conditions(
        rows, 2.0, 3, 20
    )
    assert "BUSY" not in speed.conditions(speed.rows_of(_results(0.5), threshold=2.0), 2.0, 3, 20)


def test_busy_threshold_is_one_thread_plus_half_the_cores():
    assert speed.busy_threshold(2) == 2.0 and speed.busy_threshold(16) == 9.0


def test_require_quiet_stops_at_the_first_busy_reading():
    log = []
    cell = ("mlp", "loss", 2, "ew")
    timers = {(cell, "a"): FakeTimer("a", log, 1.0, [{"step": 0.1}] * 3)}
    # Quiet before and after the first round, busy before the second: the second round does not run.
    with pytest.raises(speed.MachineBusy, match=r"load average is 3.00, above 2.00, at a mlp loss 2 ew"):
        speed.measure(
            timers, speed.schedule([(cell, ["a"])], 3), threshold=2.0, require_quiet=True, load=_readings(0.5, 0.5, 3.0)
        )
    assert log == [("prepare", "a"), ("sample", "a")]


def test_require_quiet_aborts_the_command_before_timing(monkeypatch):
    monkeypatch.setattr(speed.KerasTimer, "prepare", lambda self: pytest.fail("timed on a busy machine"))
    with pytest.raises(
        SystemExit, match="keras-mtl speed: the machine is busy: the 1-minute load average is 9.00, above 1.50"
    ):
        _speed(
            "--models",
            "mlp",
            "--tasks",
            "2",
            "--representation-tasks",
            "2",
            "--methods",
            "ew",
            "--busy-load",
            "1.5",
            "--require-quiet",
            load=lambda: 9.0,
        )


def test_workloads_are_the_issues():
    """MLP 64 -> 512 -> 512 on batches of 256, CNN of two conv layers on batches of 64 (issue 9)."""
    x, labels = speed.batch("mlp", 3)
    assert x.shape == (256, 64) and x.dtype == np.float32 and labels.shape == (256, 3)
    assert speed.batch("cnn", 2)[0].shape == (64, 28, 28, 1)
    assert (
        sum(isinstance(layer, keras.layers.Conv2D) for layer in speed._model("cnn", 2, representation=False).layers)
        == 2
    )
    mlp = speed._model("mlp", 2, representation=False)
    assert [tuple(layer.kernel.shape) for layer in mlp.layers if isinstance(layer, keras.layers.Dense)][:2] == [
        (64, 512),
        (512, 512),
    ]


def _rows(*cells):
    """Speed rows from (model, mode, K, method, ms, × ew)."""
    return [
        dict(model=m, mode=mode, K=k, method=method, **{"ms/step": ms, "× ew": ratio})
        for m, mode, k, method, ms, ratio in cells
    ]


def test_peer_rows_put_each_side_over_its_own_ew_and_keras_over_the_peer():
    rows = _rows(
        ("mlp", "loss", 2, "ew", 4.0, 1.0),
        ("mlp", "parameters", 2, "upgrad", 10.0, 2.5),
        ("mlp", "parameters", 2, "hydalearn", 12.0, 3.0),
    )
    peer = {
        ("mlp", "loss", 2, "ew"): 0.005,
        ("mlp", "parameters", 2, "upgrad"): 0.020,
    }  # seconds; no HydaLearn in TorchJD
    comparison = speed.peer_rows(rows, peer, "torchjd")
    assert [row["method"] for row in comparison] == ["ew", "upgrad"]
    upgrad = comparison[1]
    assert upgrad["keras_mtl ms"] == 10.0 and upgrad["keras_mtl × ew"] == 2.5
    assert math.isclose(upgrad["torchjd ms"], 20.0) and math.isclose(upgrad["torchjd × ew"], 4.0)
    assert math.isclose(upgrad["keras_mtl / torchjd"], 0.5)
    assert math.isclose(comparison[0]["keras_mtl / torchjd"], 0.8)
    # keras_mtl faster in both cells (4 < 5, 10 < 20), median of 0.8 and 0.5; UPGrad's 2.5 × ew <= TorchJD's 4.0.
    assert speed.peer_summary(comparison, "torchjd") == (
        "keras_mtl faster in 2 of 2 cells, median keras_mtl / torchjd 0.65; "
        "machinery over its own ew no costlier than torchjd's in 1 of 1 method cells"
    )


def test_torchjd_methods_are_registered_ids():
    assert set(speed.TORCHJD_METHODS) <= set(keras_mtl.available())


def test_unknown_peer_or_method_is_rejected_before_timing(capsys):
    for argv, message in (
        (["--peer", "libfoo"], "invalid choice: 'libfoo'"),
        (["--peer", "torchjd", "--methods", "foo"], "unknown method ids ['foo']"),
    ):
        with pytest.raises(SystemExit):
            keras_mtl_cli.parse(["speed", *argv])
        assert message in capsys.readouterr().err


def test_missing_peer_is_a_note_and_keras_side_still_runs(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("torch", "torchjd") else real_find_spec(name, *args),
    )
    rows = _speed(
        "--models",
        "mlp",
        "--tasks",
        "2",
        "--representation-tasks",
        "2",
        "--methods",
        "ew",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--fit-steps",
        "0",
        "--peer",
        "torchjd",
    )
    assert [(row["mode"], row["method"]) for row in rows] == [
        ("stock", "keras"),
        ("loss", "ew"),
        ("representation", "mean"),
    ]
    out, err = capsys.readouterr()
    assert (
        "note: --peer torchjd skipped: torch and torchjd not installed (pip install 'keras_mtl[torchjd]')"
        in " ".join(err.split())
    )
    assert "torchjd" not in out  # no comparison table


def _run_torch_side(code):
    """Runs `code` beside `speed_torch` (imported by path, as `speed` runs it: no TensorFlow in that process); returns its JSON."""
    folder = Path(speed.__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(folder)!r})\n{code}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@needs_torchjd
def test_every_torchjd_counterpart_builds():
    code = f"""
import json, speed_torch
methods = {speed.TORCHJD_METHODS!r}
print(json.dumps({{method_id: type(speed_torch.make_method(spec, 3)).__name__ for method_id, spec in methods.items()}}))
"""
    built = _run_torch_side(code)
    assert built == {method_id: path.split(".")[1] for method_id, (path, _) in speed.TORCHJD_METHODS.items()}


@needs_torchjd
@pytest.mark.parametrize("representation", [False, True])
def test_torchjd_mean_step_is_sgd_on_the_mean_loss_for_the_trunk_and_each_loss_for_its_head(representation):
    """The defining property of both modes: with `Mean`, the trunk moves along the mean task gradient, each head along its own.

    The reference is plain PyTorch autograd on the same network and batch, without TorchJD.
    """
    code = f"""
import copy, json
import numpy as np, torch, speed_torch
rng = np.random.default_rng(1)
x = torch.from_numpy(rng.normal(size=(8, 5)).astype("float32")); labels = torch.from_numpy(rng.integers(0, 10, size=(8, 3)))
torch.manual_seed(0)
net = speed_torch.MultiTaskNet("mlp", (5,), 3, 10)
reference = copy.deepcopy(net)
speed_torch.make_step(speed_torch.make_method(("aggregation.Mean", {{}}), 3), net, representation={representation})(x, labels)
losses = reference.losses(reference.trunk(x), labels)
trunk = torch.autograd.grad(sum(losses) / 3, list(reference.trunk.parameters()), retain_graph=True)
heads = [torch.autograd.grad(loss, list(head.parameters())) for loss, head in zip(losses, reference.heads)]
expected = [p - 0.01 * g for p, g in zip(reference.trunk.parameters(), trunk)]
expected += [p - 0.01 * g for head, grads in zip(reference.heads, heads) for p, g in zip(head.parameters(), grads)]
actual = [*net.trunk.parameters(), *(p for head in net.heads for p in head.parameters())]
moved = max(float((a - p).abs().max()) for a, p in zip(actual, reference.parameters()))
print(json.dumps({{"error": max(float((a - e).abs().max()) for a, e in zip(actual, expected)), "moved": moved}}))
"""
    result = _run_torch_side(code)
    assert result["moved"] > 1e-4  # the step did move the parameters
    assert result["error"] < 1e-6


@needs_torchjd
def test_peer_process_serves_prepare_and_sample_on_the_cells_batches():
    cells = [("mlp", "loss", 2, "ew"), ("mlp", "representation", 3, "upgrad")]
    peer = speed.PeerProcess(cells, speed.PEER_THREADS)
    try:
        timers = [speed.PeerTimer(peer, cell, steps=1) for cell in cells]
        assert all(timer.prepare() > 0 for timer in timers)
        assert all(timer.sample()["step"] > 0 for timer in timers)
        assert peer.versions.startswith("TorchJD ") and peer.threads == speed.PEER_THREADS
    finally:
        peer.close()


def test_batched_column_and_the_peer_run_in_the_interleaved_rounds(monkeypatch):
    """The whole command without timing: fake timers answer fixed seconds; the order they are asked in is the schedule's."""
    log = []

    class Timer(FakeTimer):
        def __init__(self, build, cell, steps, fit_steps, executions):
            name = (*build, cell[1], cell[3])
            super().__init__(name, log, 1.0, [{"step": 2.0 if build[-1] == "batched" else 1.0, ("fit", 1): 1.0}] * 2)

    class Peer:
        versions, threads = "TorchJD test", 2

        def __init__(self, cells, threads):
            assert [cell[3] for cell in cells] == ["ew", "mean", "mgda", "mean", "mgda"]  # the cells TorchJD has

        def close(self):
            pass

    class PeerTimer(FakeTimer):
        def __init__(self, peer, cell, steps):
            super().__init__(("torchjd", cell[1], cell[3]), log, 1.0, [{"step": 0.5}] * 2)

    monkeypatch.setattr(speed, "KerasTimer", Timer)
    monkeypatch.setattr(speed, "keras_mtl_builder", lambda cell, task_gradients="sequential": ("mtl", task_gradients))
    monkeypatch.setattr(speed, "stock_builder", lambda cell: ("stock",))
    monkeypatch.setattr(speed, "PeerProcess", Peer)
    monkeypatch.setattr(speed, "PeerTimer", PeerTimer)
    monkeypatch.setattr(speed, "missing_peer_packages", list)
    rows = _speed(
        "--models",
        "mlp",
        "--tasks",
        "2",
        "--representation-tasks",
        "2",
        "--methods",
        "ew",
        "mean",
        "mgda",
        "--repeats",
        "2",
        "--steps-per-execution",
        "1",
        "--batched",
        "--peer",
        "torchjd",
    )
    by_key = {(row["mode"], row["method"]): row["batched / sequential"] for row in rows}
    assert by_key == {
        ("stock", "keras"): None,
        ("loss", "ew"): None,
        ("parameters", "mean"): 2.0,
        ("parameters", "mgda"): 2.0,
        ("representation", "mean"): 2.0,
        ("representation", "mgda"): 2.0,
    }
    samples = [name for call, name in log if call == "sample"]
    p, r = "parameters", "representation"
    assert samples == 2 * [
        ("stock", "stock", "keras"), ("mtl", "sequential", "loss", "ew"), ("torchjd", "loss", "ew"),
        ("mtl", "sequential", p, "mean"), ("torchjd", p, "mean"), ("mtl", "batched", p, "mean"),
        ("mtl", "sequential", p, "mgda"), ("torchjd", p, "mgda"), ("mtl", "batched", p, "mgda"),
        ("mtl", "sequential", r, "mean"), ("torchjd", r, "mean"), ("mtl", "batched", r, "mean"),
        ("mtl", "sequential", r, "mgda"), ("torchjd", r, "mgda"), ("mtl", "batched", r, "mgda"),
    ]  # fmt: skip
    # Each timer prepared once, before its first sample.
    assert [name for call, name in log if call == "prepare"] == samples[:15]


def test_fit_is_timed_with_steps_per_execution_1_only_on_torch(monkeypatch):
    args = keras_mtl_cli.parse(["speed", "--steps-per-execution", "1", "8", "8"])
    assert speed.fit_executions(args) == [1, 8]
    assert speed.fit_executions(keras_mtl_cli.parse(["speed", "--fit-steps", "0"])) == []
    # Keras's torch trainer refuses steps_per_execution > 1.
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert speed.fit_executions(args) == [1]
