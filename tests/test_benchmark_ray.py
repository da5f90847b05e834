"""The benchmark's runs as Ray tasks on a local Ray instance of 2 CPUs: the same table as in-process, a killed worker loses nothing."""

import functools
import os
import signal
import sys

import pandas
import pytest

ray = pytest.importorskip("ray")

from keras_mtl import datasets  # noqa: E402
from keras_mtl.benchmark import cache, compare, compare_methods, runner  # noqa: E402

# Importable by the workers: a function of keras_mtl, not of this test module.
TINY = functools.partial(datasets.gradnorm_toy, num_train=48, num_validation=16, num_test=16, input_dim=4, output_dim=2)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The trainer below is pickled by value (by Ray's own cloudpickle): the workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _without_times(table):
    return table.drop(columns=["seconds_per_step", "time_vs_ew"])


# A local Ray instance takes tens of seconds: CI runs it in its `-m guarantee` step, outside the default run.
@pytest.mark.slow
@pytest.mark.guarantee
def test_runs_on_ray_give_the_table_of_runs_in_process(local_ray, tmp_path):
    options = {"methods": ["ew"], "seeds": 2, "epochs": 1, "batch_size": 16, "progress": False}
    here = compare_methods(compare.build_model, TINY, output=tmp_path / "here", **options)
    there = compare_methods(compare.build_model, TINY, output=tmp_path / "there", ray=True, **options)
    # Bit for bit: every metric, Δm% and interval (EW is deterministic); only step times differ.
    pandas.testing.assert_frame_equal(_without_times(there), _without_times(here), check_exact=True)


class _FaultyTrainer(compare.Trainer):
    """Kills its own worker the first time it trains seed 1; always raises on the "broken" run (and counts the attempts)."""

    def __init__(self, folder):
        super().__init__(compare.build_model, {"tiny": TINY})
        self.folder = folder

    def __call__(self, config, callbacks=()):
        if config["label"] == "broken":
            with open(self.folder / "attempts", "a") as file:
                file.write(f"{os.getpid()}\n")
            raise ValueError("broken on purpose")
        marker = self.folder / "killed"
        if config["seed"] == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(config, callbacks)


def _config(label, seed):
    return {
        "dataset": "tiny",
        "max_examples": None,
        "epochs": 1,
        "batch_size": 16,
        "label": label,
        "method_id": "ew",
        "method_kwargs": {},
        "seed": seed,
        "learning_rate": 1e-3,
    }


# A local Ray instance takes tens of seconds: CI runs it in its `-m guarantee` step, outside the default run.
@pytest.mark.slow
@pytest.mark.guarantee
def test_a_killed_worker_loses_nothing_and_a_failing_run_is_reported_once(local_ray, tmp_path):
    configs = [_config("ew", 0), _config("ew", 1), _config("broken", 0)]
    folder = tmp_path / "runs"
    folder.mkdir()
    results, trained = runner.execute(
        configs, folder, _FaultyTrainer(tmp_path), ray=runner.RayOptions(), progress=False
    )
    assert trained == 3 and (tmp_path / "killed").exists()
    # The killed run was retried on another worker: its result is the run's, to the bit, and cached.
    in_process = compare.Trainer(compare.build_model, {"tiny": TINY})(_config("ew", 1))
    assert results[1]["test"] == in_process["test"] and results[1]["validation"] == in_process["validation"]
    assert cache.read(cache.run_path(folder, configs[1]), configs[1])[0]["test"] == in_process["test"]
    # The run that raises: reported with its error, tried once (not retried by Ray), not cached.
    assert results[2]["error"].startswith("ValueError: broken on purpose")
    assert len((tmp_path / "attempts").read_text().split()) == 1
    assert not cache.run_path(folder, configs[2]).exists()
    # A driver that starts again reads the finished runs and tries only the failed one.
    assert runner.execute(configs, folder, _FaultyTrainer(tmp_path), ray=runner.RayOptions(), progress=False)[1] == 1


# A local Ray instance takes tens of seconds: CI runs it in its `-m guarantee` step, outside the default run.
@pytest.mark.slow
@pytest.mark.guarantee
def test_the_users_code_from_the_current_folder_reaches_the_workers(local_ray, tmp_path, monkeypatch):
    # A module the workers cannot import (it lives in a temporary folder, the driver's current one): sent by value.
    (tmp_path / "ray_user_code.py").write_text(
        "import keras, numpy as np, keras_mtl\n"
        "from keras_mtl.datasets import MultiTaskData, regression\n"
        "def build(data, tasks):\n"
        "    inputs = keras.Input(data.input_shape)\n"
        "    hidden = keras.layers.Dense(3)(inputs)\n"
        "    return keras_mtl.MultiTaskModel(inputs, {t: s.head(t)(hidden) for t, s in tasks.items()})\n"
        "def load():\n"
        "    x = np.linspace(-1, 1, 60, dtype='float32').reshape(30, 2)\n"
        "    split = lambda a, b: (x[a:b], {'p': x[a:b, :1], 'q': x[a:b, 1:] ** 2})\n"
        "    return MultiTaskData.from_arrays({'p': regression(), 'q': regression()}, split(0, 20), split(20, 25), split(25, 30))\n"
    )
    monkeypatch.chdir(tmp_path)
    build, load = (
        compare.load_reference("ray_user_code:build", "--model"),
        compare.load_reference("ray_user_code:load", "--data"),
    )
    table = compare_methods(
        build, load, methods=["ew"], seeds=1, epochs=1, batch_size=8, output=tmp_path / "out", ray=True, progress=False
    )
    assert list(table["method"]) == ["single_task", "ew"] and table["delta_m"].notna().all()
