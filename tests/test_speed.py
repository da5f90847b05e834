"""`keras-mtl speed` end to end on a tiny configuration (the numbers themselves are not asserted)."""

import math

import keras_mtl_cli
from keras_mtl.benchmark import speed


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
    table = capsys.readouterr().out
    header, *lines = table.strip().splitlines()
    assert header.split() == ["model", "mode", "K", "method", "ms/step", "×", "ew", "×", "expected", "×", "mean"]
    assert len(lines) == len(rows) and any(line.split()[:4] == ["mlp", "parameters", "2", "sam+mean"] for line in lines)

