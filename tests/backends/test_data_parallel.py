"""JAX: `keras.distribution.DataParallel` over two host CPU devices matches one device, for every method.

The runs happen in a subprocess (tests/support/jax_data_parallel.py): the two devices must be
requested before JAX starts. TensorFlow's counterpart is tests/test_distributed.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import keras_mtl

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX distribution API")
SUPPORT = Path(__file__).parents[1] / "support"
sys.path.insert(0, str(SUPPORT))

# Plain float32 SGD over 12 steps; the runs differ only in summation order.
TOLERANCE = 2e-6
SPECS = keras_mtl.available() + [f"{i}@trunk" for i in ("mgda", "upgrad", "gradnorm")]


@pytest.fixture(scope="module")
def differences():
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ["PYTHONPATH"]]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    result = subprocess.run(
        [sys.executable, str(SUPPORT / "jax_data_parallel.py"), *SPECS],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("spec", SPECS)
def test_two_devices_match_one(differences, spec):
    assert differences[spec] < TOLERANCE
