"""Two replicas match one device for the methods that cut each batch into parts, with a loss reduced by "sum" and sample weights.

tests/test_distributed.py checks every method with the default (mean) losses; this checks the
engine's reweighting of each replica's share of a part for the other reductions, and that a
replica that holds none of a part (skipped: batch normalisation over no sample is NaN) stays finite.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"


@pytest.mark.slow
def test_two_replicas_match_one_device_with_sum_losses_and_sample_weights():
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT.parents[1]), str(SUPPORT)])}
    result = subprocess.run([sys.executable, str(SUPPORT / "parts_distributed.py")], env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert max(found["differences"].values()) < 2e-6, found
    assert found["batch_norm_finite"]
