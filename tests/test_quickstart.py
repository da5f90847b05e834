"""examples/quickstart.py, the README's quick start complete, runs as written."""

import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart.py"


@pytest.mark.slow
@pytest.mark.guarantee
def test_quickstart_runs_and_prints_uw_so_weights_that_sum_to_one():
    done = subprocess.run([sys.executable, str(QUICKSTART)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout[done.stdout.index("epoch  kind_loss") :].splitlines()[1:]
    assert len(table) == 5
    for line in table:
        epoch, kind_loss, size_loss, kind_weight, size_weight = map(float, line.split())
        # UW-SO's weights (epoch means) sum to 1, the task with the smaller loss getting the larger one.
        assert kind_weight + size_weight == pytest.approx(1.0, abs=2e-4)
        assert kind_weight > size_weight and size_loss > kind_loss
