"""QM9: 11 regression targets of 130,831 small molecules.

The molecule is described by its Coulomb matrix eigenvalues (Rupp et al.,
2012), sorted by magnitude and zero-padded to the 29 atoms of QM9's largest
molecule: a fixed-length, rotation- and permutation-invariant vector a dense
network can take. The tasks are the 11 targets of the multi-task QM9 benchmark
(Navon et al., 2022, Nash-MTL); their scales differ by about 10^4, hence the
`standardize` option.

Two sources: tfds's `qm9` set (`load_qm9`, downloads) and the CSV files of the
`qm9pack` PyPI package (`load_qm9pack`, offline; an optional extra).
"""

import csv
import importlib.util
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from keras_mtl.datasets import core

MAX_ATOMS = 29
# Task name (tfds's feature name) -> qm9pack's column; both in QM9's own units.
TARGETS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au",  # sic: qm9pack's spelling
    "G": "GibbsFreeEnergy_298K_au",
    "Cv": "Heatcapacity_Cv_cal_mol_K",
}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_NUCLEAR_CHARGE = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def coulomb_eigenvalues(charges, positions):
    """Sorted eigenvalues of Coulomb matrices.

    The Coulomb matrix has `0.5 Z_i^2.4` on its diagonal and `Z_i Z_j / |r_i - r_j|`
    elsewhere. Padding atoms (charge 0) add zero rows, hence zero eigenvalues.

    Args:
        charges: `(..., atoms)` nuclear charges, 0 for padding.
        positions: `(..., atoms, 3)` coordinates (Angstrom in QM9).

    Returns:
        float32 tensor `(..., atoms)`, sorted by decreasing absolute value.
    """
    z = tf.cast(charges, tf.float32)
    r = tf.cast(positions, tf.float32)
    distance = tf.norm(r[..., :, None, :] - r[..., None, :, :], axis=-1)
    # The diagonal's zero distances are replaced below; avoid dividing by them.
    safe_distance = tf.where(distance > 0, distance, tf.ones_like(distance))
    matrix = tf.linalg.set_diag(z[..., :, None] * z[..., None, :] / safe_distance, 0.5 * z**2.4)
    eigenvalues = tf.linalg.eigvalsh(matrix)
    order = tf.argsort(tf.abs(eigenvalues), direction="DESCENDING")
    return tf.gather(eigenvalues, order, batch_dims=len(eigenvalues.shape) - 1)


def _tasks(stats):
    """Regression specs, `stats` being `{task: (mean, std)}` (None: raw targets)."""
    return {t: core.regression(1, *(stats[t] if stats else (0.0, 1.0))) for t in TARGETS}


def _stats(targets):
    """`{task: (mean, std)}` of `{task: array}`."""
    return {t: (float(np.mean(v)), float(np.std(v)) or 1.0) for t, v in targets.items()}


def _standardize(value, task, stats):
    """`value` of `task` standardised by `stats` (unchanged when `stats` is None)."""
    if stats is None:
        return value
    mean, std = stats[task]
    return (value - mean) / std


def load_qm9(config="dimenet", standardize=True, data_dir=None):
    """QM9 from tfds (`qm9/<config>`), Coulomb eigenvalues -> 11 targets.

    Args:
        config: the tfds config, whose split it uses: "dimenet" (110,000 /
            10,000 / 10,831) or "cormorant" (100,000 / 17,748 / 13,083).
        standardize: standardise each target by the mean and standard
            deviation of its train split (one pass over it), recorded in the
            task specs.
        data_dir: the tfds data directory.

    Returns:
        A `MultiTaskData` with float32 `x` of shape `(29,)` and 11 regression
        tasks with float32 targets of shape `(1,)`.
    """
    name = f"qm9/{config}"
    stats = None
    if standardize:
        train = tfds.load(name, split="train", data_dir=data_dir).map(lambda e: {t: e[t] for t in TARGETS})
        batches = list(train.batch(8192).as_numpy_iterator())
        stats = _stats({t: np.concatenate([b[t] for b in batches]) for t in TARGETS})

    def to_example(e):
        y = {t: tf.reshape(_standardize(tf.cast(e[t], tf.float32), t, stats), (1,)) for t in TARGETS}
        return coulomb_eigenvalues(e["charges"], e["positions"]), y

    return core.from_tfds(name, core.OWN_SPLITS, to_example, _tasks(stats), data_dir)


def qm9pack_files():
    """The CSV files of the installed qm9pack package (`pip install qm9pack==1.0.3`).

    Found without importing qm9pack, whose import needs `pkg_resources`.
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None:
        raise ImportError("load_qm9pack needs `pip install qm9pack==1.0.3` (a 104 MB wheel).")
    data = epath.Path(spec.submodule_search_locations[0]) / "data"
    return [data / f"qm9_part{i}.csv" for i in (1, 2, 3)]


def read_qm9pack_csv(path):
    """Reads one qm9pack CSV file.

    Args:
        path: the CSV file (any path `etils.epath` opens).

    Returns:
        `(charges (n, 29) int32, positions (n, 29, 3) float32, {task: (n,) float64})`;
        float64 because the energies (about -400 hartree) carry 6 decimals.
    """
    charges, positions, targets = [], [], {t: [] for t in TARGETS}
    with epath.Path(path).open() as f:
        for row in csv.DictReader(f):
            # Elements look like "['C','H','H']" and XYZ_Ang like "[[x,y,z],...]",
            # with numbers such as "0." and "1.2*^-6" that JSON rejects.
            z = [_NUCLEAR_CHARGE[e] for e in re.findall(r"[A-Z][a-z]?", row["Elements"])]
            numbers = _NUMBER.findall(row["XYZ_Ang"].replace("*^", "e"))
            xyz = np.asarray(numbers, np.float64).astype(np.float32).reshape(len(z), 3)
            charges.append(np.pad(z, (0, MAX_ATOMS - len(z))))
            positions.append(np.pad(xyz, ((0, MAX_ATOMS - len(z)), (0, 0))))
            for task, column in TARGETS.items():
                targets[task].append(float(row[column]))
    return (
        np.asarray(charges, np.int32).reshape(-1, MAX_ATOMS),
        np.asarray(positions, np.float32).reshape(-1, MAX_ATOMS, 3),
        {t: np.asarray(v, np.float64) for t, v in targets.items()},
    )


def load_qm9pack(paths=None, standardize=True, validation_fraction=0.1, test_fraction=0.1, seed=0):
    """QM9 from qm9pack's CSV files, offline: Coulomb eigenvalues -> 11 targets.

    Args:
        paths: the CSV files to read; qm9pack's three by default.
        standardize: standardise each target by its train mean and standard
            deviation, recorded in the task specs.
        validation_fraction: the share of molecules in the validation split, drawn at random with `seed`,
            default 0.1.
        test_fraction: the share in the test split, default 0.1.
        seed: the seed of the split.

    Returns:
        A `MultiTaskData` like `load_qm9`'s, in memory.
    """
    parts = [read_qm9pack_csv(p) for p in (paths or qm9pack_files())]
    charges = np.concatenate([p[0] for p in parts])
    positions = np.concatenate([p[1] for p in parts])
    targets = {t: np.concatenate([p[2][t] for p in parts]) for t in TARGETS}
    # In chunks: the pairwise distances of all 130k molecules at once take GBs.
    chunks = range(0, len(charges), 8192)
    x = np.concatenate([coulomb_eigenvalues(charges[i : i + 8192], positions[i : i + 8192]).numpy() for i in chunks])
    train, validation, test = core.split_indices(len(x), validation_fraction, test_fraction, seed)
    stats = _stats({t: v[train] for t, v in targets.items()}) if standardize else None
    y = {t: _standardize(v, t, stats)[:, None].astype(np.float32) for t, v in targets.items()}
    return core.from_arrays(x, y, _tasks(stats), train, validation, test)
