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
needs_torchjd = pytest.mark.skipif(not HAS_TORCHJD, reason="torch and torchjd not installed (pip install 'keras_mtl[torchjd]')")


def _speed(*argv):
    return speed.run(keras_mtl_cli.parse(["speed", *argv]))


def test_speed_table_has_a_row_per_method_and_mode(capsys):
    methods = ["ew", "uw", "mean", "pcgrad", "hydalearn", "sam", "sam+mean", "krum"]
    rows = _speed("--models", "mlp", "--tasks", "2", "--representation-tasks", "3", "--methods", *methods, "--steps", "1")
    by_key = {(row["mode"], row["K"], row["method"]): row for row in rows}
    assert set(by_key) == {
        ("loss", 2, "ew"),
        ("loss", 2, "uw"),
        ("loss", 2, "sam"),
        *(("parameters", 2, m) for m in ("mean", "pcgrad", "hydalearn", "sam+mean")),
        # Exact HydaLearn and SAM move parameters: no representation mode.
        *(("representation", 3, m) for m in ("mean", "pcgrad")),
        # Krum needs K >= 3: skipped at K = 2.
        ("representation", 3, "krum"),
    }
    assert by_key[("loss", 2, "ew")]["× ew"] == 1.0
    assert by_key[("parameters", 2, "mean")]["× mean"] == 1.0
    # Expected costs: K = 2 backward passes are (1 + 2·2)/3 plain steps; per-task SAM adds K.
    ratio = by_key[("parameters", 2, "sam+mean")]
    assert math.isclose(ratio["× expected"], ratio["× ew"] / (5 / 3 + 2))
    assert math.isclose(by_key[("loss", 2, "sam")]["× expected"], by_key[("loss", 2, "sam")]["× ew"] / 2)
    assert by_key[("loss", 2, "uw")]["× expected"] is None
    assert all(row["ms/step"] > 0 for row in rows)
    title, header, *lines = capsys.readouterr().out.strip().splitlines()
    # The title names the backend that ran the steps.
    assert f"backend {keras.backend.backend()}" in title
    assert header.split() == ["model", "mode", "K", "method", "ms/step", "×", "ew", "×", "expected", "×", "mean"]
    assert len(lines) == len(rows) and any(line.split()[:4] == ["mlp", "parameters", "2", "sam+mean"] for line in lines)


def test_workloads_are_the_issues():
    """MLP 64 -> 512 -> 512 on batches of 256, CNN of two conv layers on batches of 64 (issue 9)."""
    x, labels = speed.batch("mlp", 3)
    assert x.shape == (256, 64) and x.dtype == np.float32 and labels.shape == (256, 3)
    assert speed.batch("cnn", 2)[0].shape == (64, 28, 28, 1)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in speed._model("cnn", 2, representation=False).layers) == 2
    mlp = speed._model("mlp", 2, representation=False)
    assert [tuple(layer.kernel.shape) for layer in mlp.layers if isinstance(layer, keras.layers.Dense)][:2] == [(64, 512), (512, 512)]


def _rows(*cells):
    """Speed rows from (model, mode, K, method, ms, × ew)."""
    return [dict(model=m, mode=mode, K=k, method=method, **{"ms/step": ms, "× ew": ratio}) for m, mode, k, method, ms, ratio in cells]


def test_peer_rows_put_each_side_over_its_own_ew_and_keras_over_the_peer():
    rows = _rows(("mlp", "loss", 2, "ew", 4.0, 1.0), ("mlp", "parameters", 2, "upgrad", 10.0, 2.5), ("mlp", "parameters", 2, "hydalearn", 12.0, 3.0))
    peer = {("mlp", "loss", 2, "ew"): 0.005, ("mlp", "parameters", 2, "upgrad"): 0.020}  # seconds; no HydaLearn in TorchJD
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


def test_peer_cells_add_each_ew_baseline_once():
    rows = _rows(("mlp", "loss", 2, "ew", 1.0, 1.0), ("mlp", "parameters", 2, "mean", 1.0, 1.0), ("mlp", "representation", 3, "mean", 1.0, 1.0))
    assert speed.peer_cells(rows) == [
        ("mlp", "loss", 2, "ew"),
        ("mlp", "loss", 3, "ew"),  # the representation cell's baseline, which keras_mtl's rows do not list
        ("mlp", "parameters", 2, "mean"),
        ("mlp", "representation", 3, "mean"),
    ]


def test_torchjd_methods_are_registered_ids():
    assert set(speed.TORCHJD_METHODS) <= set(keras_mtl.available())


def test_unknown_peer_or_method_is_rejected_before_timing(capsys):
    for argv, message in ((["--peer", "libfoo"], "invalid choice: 'libfoo'"), (["--peer", "torchjd", "--methods", "foo"], "unknown method ids ['foo']")):
        with pytest.raises(SystemExit):
            keras_mtl_cli.parse(["speed", *argv])
        assert message in capsys.readouterr().err


def test_missing_peer_is_a_note_and_keras_side_still_runs(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name in ("torch", "torchjd") else real_find_spec(name, *args))
    rows = _speed("--models", "mlp", "--tasks", "2", "--representation-tasks", "2", "--methods", "ew", "--steps", "1", "--peer", "torchjd")
    assert [(row["mode"], row["method"]) for row in rows] == [("loss", "ew")]
    out, err = capsys.readouterr()
    assert "note: --peer torchjd skipped: torch and torchjd not installed (pip install 'keras_mtl[torchjd]')" in " ".join(err.split())
    assert "torchjd" not in out  # no comparison table


def _run_torch_side(code):
    """Runs `code` beside `speed_torch` (imported by path, as `speed` runs it: no TensorFlow in that process); returns its JSON."""
    folder = Path(speed.__file__).parent
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(folder)!r})\n{code}"], capture_output=True, text=True)
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
def test_time_peer_times_the_cells_torchjd_has():
    rows = _rows(("mlp", "loss", 2, "ew", 1.0, 1.0), ("mlp", "parameters", 2, "upgrad", 1.0, 1.0), ("mlp", "parameters", 2, "hydalearn", 1.0, 1.0))
    seconds, versions, threads = speed.time_peer(speed.peer_cells(rows), steps=1)
    assert set(seconds) == {("mlp", "loss", 2, "ew"), ("mlp", "parameters", 2, "upgrad")}
    assert all(value > 0 for value in seconds.values())
    assert versions.startswith("TorchJD ") and threads == speed.PEER_THREADS


def test_batched_column_times_gradient_methods_both_ways(monkeypatch):
    timed = []

    def fake_step_time(method_id, kind, num_tasks, representation=False, steps=20, repeats=5, status=None, task_gradients="sequential"):
        timed.append((method_id, representation, task_gradients))
        return 2.0 if task_gradients == "batched" else 1.0

    monkeypatch.setattr(speed, "step_time", fake_step_time)
    rows = _speed("--models", "mlp", "--tasks", "2", "--representation-tasks", "2", "--methods", "ew", "mean", "mgda", "--steps", "1", "--batched")
    by_key = {(row["mode"], row["method"]): row["batched / sequential"] for row in rows}
    assert by_key == {("loss", "ew"): None, ("parameters", "mean"): 2.0, ("parameters", "mgda"): 2.0, ("representation", "mean"): 2.0, ("representation", "mgda"): 2.0}
    assert {(m, r) for m, r, how in timed if how == "batched"} == {("mean", False), ("mgda", False), ("mean", True), ("mgda", True)}
