"""QM9 features and qm9pack reading, on a tiny CSV in qm9pack's format."""

import csv

import numpy as np
import pytest

from keras_mtl import datasets
from keras_mtl.datasets.qm9 import MAX_ATOMS, TARGETS

# Three molecules: H2 (bond along x), CH4-like (C at the origin, 4 H) and NH3-like.
_MOLECULES = [
    (["H", "H"], [[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]]),
    (["C", "H", "H", "H", "H"],
     [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]),
    (["N", "H", "H", "H"], [[0, 0, 0.1], [0.94, 0, -0.28], [-0.47, 0.81, -0.28], [-0.47, -0.81, -0.28]]),
]  # fmt: skip
_COLUMNS = ["XYZ_file", "Index", "SMILES", "InChi", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang", "Mulliken_pop"]


def _write_csv(path, num_copies=1):
    """A CSV like qm9pack's: quoted list strings, and every target column,
    target j of molecule i being `(j + 1) * 10**j + i` (scales up to 10^10)."""
    columns = _COLUMNS + list(TARGETS.values())
    rows = []
    for i in range(num_copies * len(_MOLECULES)):
        elements, xyz = _MOLECULES[i % len(_MOLECULES)]
        row = {c: "" for c in _COLUMNS}
        row["Elements"] = "[" + ",".join(f"'{e}'" for e in elements) + "]"
        # qm9pack writes whole numbers as "0." and exponents as "*^" (Mathematica).
        row["XYZ_Ang"] = str([[f"{v:.6f}".rstrip("0") for v in atom] for atom in xyz]).replace("'", "").replace(" ", "")
        row["XYZ_Ang"] = row["XYZ_Ang"].replace("0.74", "7.4*^-1")
        row.update({column: (j + 1) * 10**j + i for j, column in enumerate(TARGETS.values())})
        rows.append(row)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)


def test_coulomb_eigenvalues_of_h2():
    # [[0.5, 1/d], [1/d, 0.5]] has eigenvalues 0.5 +- 1/d; padding adds zeros.
    charges = np.zeros(MAX_ATOMS, np.int32)
    charges[:2] = 1
    positions = np.zeros((MAX_ATOMS, 3), np.float32)
    positions[1, 0] = 0.74
    eigenvalues = datasets.coulomb_eigenvalues(charges, positions).numpy()
    expected = np.zeros(MAX_ATOMS)
    expected[:2] = 0.5 + 1 / 0.74, 0.5 - 1 / 0.74  # sorted by magnitude
    np.testing.assert_allclose(eigenvalues, expected, atol=1e-5)


def test_coulomb_eigenvalues_are_invariant():
    rng = np.random.default_rng(0)
    charges = np.array([6, 1, 1, 8, 7, 0, 0])
    positions = np.concatenate([rng.normal(size=(5, 3)), np.zeros((2, 3))])
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    order = np.array([3, 0, 4, 2, 1, 5, 6])  # permute the real atoms
    # Rotated, shifted and permuted; padding atoms stay at the origin.
    moved = (positions @ rotation.T + 1.5)[order] * (charges[order, None] > 0)
    batch = datasets.coulomb_eigenvalues(np.stack([charges, charges[order]]), np.stack([positions, moved])).numpy()
    np.testing.assert_allclose(batch[0], batch[1], rtol=1e-4, atol=1e-4)
    assert (batch[0, 5:] == 0).all()
    assert (np.diff(np.abs(batch[0])) <= 1e-6).all()  # sorted by decreasing magnitude


def test_read_qm9pack_csv(tmp_path):
    _write_csv(tmp_path / "part.csv")
    charges, positions, targets = datasets.read_qm9pack_csv(tmp_path / "part.csv")
    assert charges.shape == (3, MAX_ATOMS) and positions.shape == (3, MAX_ATOMS, 3)
    np.testing.assert_array_equal(charges[1, :6], [6, 1, 1, 1, 1, 0])
    np.testing.assert_allclose(positions[0, 1], [0.74, 0, 0])
    assert list(targets) == list(TARGETS)
    np.testing.assert_allclose(targets["mu"], [1, 2, 3])
    np.testing.assert_allclose(targets["Cv"], 11e10 + np.arange(3), rtol=1e-6)


@pytest.mark.parametrize("standardize", [True, False])
def test_load_qm9pack(tmp_path, standardize):
    _write_csv(tmp_path / "a.csv", num_copies=3)
    _write_csv(tmp_path / "b.csv", num_copies=1)
    data = datasets.load_qm9pack(
        [tmp_path / "a.csv", tmp_path / "b.csv"], standardize=standardize, validation_fraction=0.25, test_fraction=0.25
    )
    splits = [list(ds.as_numpy_iterator()) for ds in (data.train, data.validation, data.test)]
    assert [len(s) for s in splits] == [6, 3, 3]
    assert list(data.tasks) == list(TARGETS) and data.input_shape == (MAX_ATOMS,)
    x, y = splits[0][0]
    assert x.dtype == np.float32 and set(y) == set(TARGETS) and y["U0"].shape == (1,)
    train_y = np.array([[y[t][0] for t in TARGETS] for _, y in splits[0]])
    if standardize:
        np.testing.assert_allclose(train_y.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(train_y.std(axis=0), 1, rtol=1e-4)
        # The 10^10 scale of the last target lives in its spec, not in its values.
        assert data.tasks["Cv"].target_mean > 1e11
    else:
        assert train_y[:, -1].min() > 1e11
