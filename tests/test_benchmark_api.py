"""`compare_methods` and `keras-mtl benchmark --model/--data` on a user's own model and data; multi-input tasks; failures; Ctrl-C; JAX."""

import csv
import json
import math
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas
import pytest

import keras_mtl
import keras_mtl_cli
from keras_mtl import datasets
from keras_mtl.benchmark import cache, compare, compare_methods, report, runner

EXAMPLE = Path(__file__).parents[1] / "examples" / "benchmark_your_model.py"


def test_the_example_benchmarks_its_own_model_and_data(tmp_path):
    example = runpy.run_path(str(EXAMPLE))
    table = example["main"](num_examples=200, epochs=1, seeds=2, methods=["ew", "pcgrad"], output=str(tmp_path))
    assert isinstance(table, pandas.DataFrame)
    assert list(table["method"]) == [report.SINGLE_TASK, "ew", "pcgrad"]
    # The DataFrame is the table of results.csv.
    with open(tmp_path / "results.csv") as file:
        saved = list(csv.DictReader(file))
    assert [row["method"] for row in saved] == list(table["method"])
    assert [float(row["delta_m"]) for row in saved] == pytest.approx(list(table["delta_m"]))
    runs = [json.loads(path.read_text()) for path in (tmp_path / "runs").iterdir()]
    # 2 single-task baselines and 2 methods, 2 seeds each; each baseline trains the example's model for its one task.
    assert len(runs) == 8
    baseline = next(r for r in runs if r["config"]["label"] == "single_task:size")
    assert list(baseline["test"]) == ["size"] and baseline["config"]["model"].endswith(":build_model")
    assert all(math.isfinite(v) for r in runs for v in r["test"].values()), [
        (r["config"]["label"], r["test"]) for r in runs
    ]
    assert table["verdict"][1] == "reference" and table["verdict"][2] in (
        report.BETTER,
        report.WORSE,
        report.UNDECIDED,
        report.NO_SPREAD,
    )


USER_MODULE = """
import keras
import numpy as np
import keras_mtl
from keras_mtl.datasets import MultiTaskData, classification, regression

BUILT = []


def build(data, tasks):
    BUILT.append(sorted(tasks))
    inputs = keras.Input(data.input_shape)
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    return keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(hidden) for name, spec in tasks.items()})


def load():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3)).astype("float32")
    y = {"up": (x[:, :1] > 0).astype("float32"), "level": x[:, 1:2] * 2}
    split = lambda a, b: (x[a:b], {k: v[a:b] for k, v in y.items()})
    return MultiTaskData.from_arrays({"up": classification(2), "level": regression()}, split(0, 40), split(40, 50), split(50, 60))
"""


def test_the_command_takes_the_users_model_and_data_as_module_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_mtl_code.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = keras_mtl_cli.parse(
        [
            "benchmark",
            "--model",
            "my_mtl_code:build",
            "--data",
            "my_mtl_code:load",
            "--methods",
            "ew",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--output",
            "out",
        ]
    )
    result = compare.run(args)
    import my_mtl_code

    assert result["trained"] == 3 and [row["method"] for row in result["rows"]] == [report.SINGLE_TASK, "ew"]
    # The user's builder made every model: both tasks (the method, the compile check) and each task alone (the baselines).
    assert ["level"] in my_mtl_code.BUILT and ["up"] in my_mtl_code.BUILT and ["level", "up"] in my_mtl_code.BUILT
    config = json.loads(next((tmp_path / "out" / "runs").glob("ew_*")).read_text())["config"]
    assert config["model"] == "my_mtl_code:build" and config["dataset"] == "my_mtl_code:load"
    with pytest.raises(SystemExit, match="my_mtl_code has no attribute 'nope'"):
        compare.load_reference("my_mtl_code:nope", "--model")


def _domain(name, count, seed):
    rng = np.random.default_rng(seed)

    def split(n):
        x = rng.normal(size=(n, 5)).astype("float32")
        return x, {name: (x[:, :3].sum(1) > 0).astype("int64") + (x[:, 3] > 0)}

    return datasets.MultiTaskData.from_arrays({name: datasets.classification(3)}, split(count), split(6), split(6))


def test_zip_tasks_pairs_each_tasks_own_examples_and_repeats_the_shorter_training_sets():
    amazon, webcam = _domain("amazon", 5, 0), _domain("webcam", 3, 1)
    data = datasets.zip_tasks({"amazon": amazon, "webcam": webcam})
    assert data.inputs_per_task and data.input_shape == {"amazon": (5,), "webcam": (5,)}
    examples = list(data.train.as_numpy_iterator())
    own = {name: list(d.train.as_numpy_iterator()) for name, d in (("amazon", amazon), ("webcam", webcam))}
    # An epoch covers the longest domain (5); webcam's 3 examples come round again: 0 1 2 0 1.
    assert len(examples) == 5
    for i, (x, y) in enumerate(examples):
        np.testing.assert_array_equal(x["amazon"], own["amazon"][i][0])
        np.testing.assert_array_equal(x["webcam"], own["webcam"][i % 3][0])
        assert y["webcam"] == own["webcam"][i % 3][1]["webcam"]
    only = data.select_tasks(["webcam"])
    assert set(only.train.element_spec[0]) == {"webcam"} and list(only.tasks) == ["webcam"]
    with pytest.raises(ValueError, match="must have that one task"):
        datasets.zip_tasks({"amazon": webcam})


def shared_encoder_model(data, tasks):
    """One input per task (its domain's images), one shared encoder, one head per task: LibMTL's multi-input setting."""
    encoder = keras.Sequential([keras.layers.Dense(8, activation="relu")], name="encoder")
    inputs = {name: keras.Input(data.input_shape[name], name=f"{name}_images") for name in tasks}
    return keras_mtl.MultiTaskModel(
        inputs, {name: spec.head(name)(encoder(inputs[name])) for name, spec in tasks.items()}
    )


def test_the_benchmark_takes_tasks_with_inputs_of_their_own(tmp_path):
    data = datasets.zip_tasks({"amazon": _domain("amazon", 40, 0), "webcam": _domain("webcam", 24, 1)})
    table = compare_methods(
        shared_encoder_model,
        data,
        methods=["ew", "pcgrad"],
        seeds=1,
        epochs=1,
        batch_size=8,
        output=tmp_path,
        progress=False,
    )
    assert list(table["method"]) == [report.SINGLE_TASK, "ew", "pcgrad"]
    assert np.isfinite(table[["amazon", "webcam", "delta_m"]].to_numpy(dtype=float)).all()


class _Breaks(compare.Trainer):
    def __call__(self, config, callbacks=()):
        if config["label"] == "uw":
            raise RuntimeError("the user's model broke")
        return super().__call__(config, callbacks)


def test_a_run_that_raises_is_in_the_table_with_its_error_and_is_not_cached(tmp_path, capsys):
    data = datasets.gradnorm_toy(num_train=40, num_validation=16, num_test=16, input_dim=4, output_dim=2)
    trainer = _Breaks(compare.build_model, {"toy": data})
    configs = [
        {
            "dataset": "toy",
            "max_examples": None,
            "epochs": 1,
            "batch_size": 16,
            "label": label,
            "method_id": method_id,
            "method_kwargs": kwargs,
            "seed": 0,
            "learning_rate": 1e-3,
        }
        for label, method_id, kwargs in [
            ("single_task:task_0", "single_task", {"task": "task_0"}),
            ("single_task:task_1", "single_task", {"task": "task_1"}),
            ("ew", "ew", {}),
            ("uw", "uw", {}),
        ]
    ]
    results, trained = runner.execute(configs, tmp_path, trainer, progress=False)
    assert trained == 4
    broken = results[3]
    assert broken["error"] == "RuntimeError: the user's model broke" and all(
        math.isnan(v) for v in broken["test"].values()
    )
    assert not cache.run_path(tmp_path, configs[3]).exists() and cache.run_path(tmp_path, configs[2]).exists()
    rows = {
        row["method"]: row for row in report.summarize(results[2:], results[:2], {"task_0": False, "task_1": False})
    }
    assert rows["uw"]["verdict"] == "failed: RuntimeError: the user's model broke" and rows["uw"]["rank"] == 2.0
    assert "run 4/4 uw seed 0 lr 0.001: failed: RuntimeError: the user's model broke" in capsys.readouterr().err
    # The next invocation tries the failed run again, and only it.
    assert runner.execute(configs, tmp_path, trainer, progress=False)[1] == 1


# A subprocess that imports a backend and trains: CI runs it in its `-m guarantee` step.
@pytest.mark.slow
@pytest.mark.guarantee
def test_first_ctrl_c_stops_keeping_the_finished_runs_and_says_how_to_resume(tmp_path):
    argv = [
        "--dataset",
        "gradnorm_toy",
        "--max-examples",
        "120",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--seeds",
        "4",
        "--methods",
        "ew",
        "uw",
        "--output",
        str(tmp_path),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_mtl.benchmark", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    kept = sorted((tmp_path / "runs").glob("*.json"))
    assert process.returncode == 130, err[-2000:]
    assert 1 <= len(kept) < 16
    assert (
        f"Stopped. The {len(kept)} finished runs are kept in {tmp_path / 'runs'}" in err
        and "To resume, run the same command again" in err
    )
    assert "Traceback" not in err


# A subprocess that imports a backend and trains: CI runs it in its `-m guarantee` step.
@pytest.mark.slow
@pytest.mark.guarantee
def test_the_benchmark_runs_on_jax(tmp_path):
    script = f"import runpy; table = runpy.run_path({str(EXAMPLE)!r})['main'](num_examples=200, epochs=1, seeds=1, methods=['ew', 'pcgrad'], output={str(tmp_path)!r}); print(keras_backend(), table['delta_m'].notna().all())"
    script = "import keras\nkeras_backend = keras.backend.backend\n" + script
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "jax True"
