"""MirroredStrategy over 2 logical CPUs matches one device, for every method.

The runs happen in a subprocess (tests/support/distributed_equivalence.py):
logical devices must be configured before TensorFlow initialises.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import selected_parameters, slow_case

import keras_mtl

sys.path.insert(0, str(Path(__file__).parent / "support"))
import three_tasks  # noqa: E402

SCRIPT = Path(__file__).parent / "support" / "distributed_equivalence.py"
# Plain float32 SGD over 9 steps; the runs differ only in summation order.
TOLERANCE = 2e-6


# Representation mode for every gradient method that supports it, except
# GradDrop, whose per-sample masks are drawn per replica there (documented);
# a few in the default run, the others with `-m slow`.
SPECS = keras_mtl.available() + [
    s for s in three_tasks.representation_specs(default=True) if not s.startswith("graddrop")
]
# TrimmedMean's coordinate-wise `combine` (no Gramian weights) stands for them in CI's `-m guarantee` run.
SLOW_SPECS = [
    slow_case(s, guarantee=s == "trimmed_mean@trunk")
    for s in three_tasks.representation_specs(default=False)
    if not s.startswith("graddrop")
]


def differences_of(specs):
    result = subprocess.run([sys.executable, str(SCRIPT), *specs], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def differences():
    return differences_of(SPECS)


@pytest.fixture(scope="module")
def slow_differences(request):
    return differences_of(
        selected_parameters(request, "test_two_replicas_match_one_device_in_representation_mode", "method_id")
    )


@pytest.mark.parametrize("method_id", SPECS)
def test_two_replicas_match_one_device(differences, method_id):
    assert differences[method_id] < TOLERANCE


@pytest.mark.parametrize("method_id", SLOW_SPECS)
def test_two_replicas_match_one_device_in_representation_mode(slow_differences, method_id):
    assert slow_differences[method_id] < TOLERANCE
