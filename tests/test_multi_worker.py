"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 match one device."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "multi_worker.py"


@pytest.mark.parametrize("method_id", ["mean", "uw_so"])
def test_two_workers_match_one_device(method_id):
    result = subprocess.run([sys.executable, str(EXAMPLE), method_id], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"{method_id}: 2 workers vs 1 device" in result.stdout
