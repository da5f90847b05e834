"""TensorFlow, JAX and PyTorch agree: one step from the same weights and batch gives the same weights, for every method.

Each backend runs in its own process (tests/support/one_step.py); random draws are fixed there, since
each backend draws its own numbers for a seed.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import selected_parameters, slow_case

import keras_mtl

pytest.importorskip("jax")
SUPPORT = Path(__file__).parent / "support"
sys.path.insert(0, str(SUPPORT))
import three_tasks  # noqa: E402

# Every id in parameter mode, a few in representation mode; the others with `-m slow`.
# Each backend is compared with TensorFlow; PyTorch where it is installed (the `torch` extra).
OTHER_BACKENDS = [
    "jax",
    pytest.param(
        "torch", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
    ),
]
BACKENDS = ["tensorflow", "jax"] + (["torch"] if importlib.util.find_spec("torch") else [])
SPECS = keras_mtl.available() + three_tasks.representation_specs(default=True)
# GradDrop (a coordinate-wise `combine` and random draws) stands for them in CI's `-m guarantee` run.
SLOW_SPECS = [slow_case(s, guarantee=s == "graddrop@trunk") for s in three_tasks.representation_specs(default=False)]


# Methods with each kind of state: learned (UW), remembered (Nash-MTL), a random stream (RLW),
# a row per task and a column per shared parameter (MoCo).
SAVED_SPECS = ["uw", "nash_mtl", "rlw", "moco"]
# Each backend saves and the other continues: TensorFlow with JAX and with PyTorch.
SAVE_PAIRS = [("tensorflow", "jax"), ("jax", "tensorflow"), ("tensorflow", "torch"), ("torch", "tensorflow")]


def script(backend, name, *arguments):
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ["PYTHONPATH"]]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    result = subprocess.run(
        [sys.executable, str(SUPPORT / name), *map(str, arguments)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def one_step_on_each_backend(folder, specs):
    """`{backend: {spec: weights after one step}}`."""
    results = {}
    for backend in BACKENDS:
        script(backend, "one_step.py", folder / f"{backend}.npz", *specs)
        results[backend] = np.load(folder / f"{backend}.npz")
    return results


@pytest.fixture(scope="module")
def after_one_step(tmp_path_factory):
    return one_step_on_each_backend(tmp_path_factory.mktemp("one_step"), SPECS)


@pytest.fixture(scope="module")
def after_one_step_slow(tmp_path_factory, request):
    specs = selected_parameters(request, "test_one_step_matches_across_backends_in_representation_mode", "spec")
    return one_step_on_each_backend(tmp_path_factory.mktemp("one_step_slow"), specs)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("spec", SPECS)
def test_one_step_matches_across_backends(after_one_step, spec, backend):
    assert_same_step(after_one_step, spec, backend)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("spec", SLOW_SPECS)
def test_one_step_matches_across_backends_in_representation_mode(after_one_step_slow, spec, backend):
    assert_same_step(after_one_step_slow, spec, backend)


def assert_same_step(after_one_step, spec, backend):
    tensorflow, other = after_one_step["tensorflow"][spec], after_one_step[backend][spec]
    # float32 rounding of a step of size ~0.1: the two backends sum in different orders.
    np.testing.assert_allclose(other, tensorflow, rtol=0, atol=1e-5)
    initial = np.concatenate([np.ravel(w) for w in three_tasks.initial_weights()])
    assert not np.array_equal(tensorflow[: initial.size], initial), "the step changed nothing"


@pytest.fixture(scope="module")
def continued(tmp_path_factory):
    """Per (saved on, loaded on): each saved spec's weights after one more epoch."""
    results = {}
    for saved_on, loaded_on in [pair for pair in SAVE_PAIRS if set(pair) <= set(BACKENDS)]:
        folder = tmp_path_factory.mktemp(f"saved_on_{saved_on}")
        script(saved_on, "save_and_continue.py", "save", folder, folder / "same.npz", *SAVED_SPECS)
        script(loaded_on, "save_and_continue.py", "continue", folder, folder / "other.npz", *SAVED_SPECS)
        results[saved_on, saved_on], results[saved_on, loaded_on] = (
            np.load(folder / "same.npz"),
            np.load(folder / "other.npz"),
        )
    return results


@pytest.mark.parametrize("spec", SAVED_SPECS)
@pytest.mark.parametrize("saved_on, loaded_on", SAVE_PAIRS)
def test_a_model_saved_on_one_backend_continues_on_the_other(continued, spec, saved_on, loaded_on):
    if (saved_on, loaded_on) not in continued:
        pytest.skip("torch is not installed")
    same = continued[saved_on, saved_on][spec]
    np.testing.assert_allclose(continued[saved_on, loaded_on][spec], same, rtol=0, atol=1e-5)
