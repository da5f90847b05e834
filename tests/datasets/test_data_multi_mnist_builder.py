"""The `multi_mnist` and `multi_fashion` builders under tfds's own builder checks.

`tfds.testing.DatasetBuilderTestCase` prepares each builder from tiny idx
files (only `download_and_extract` is mocked) and checks registration, info,
serialisation, the split sizes and that no example is in two splits.
"""

import tempfile
from pathlib import Path

import tensorflow_datasets as tfds
from test_data_multi_mnist import NUM_TEST, NUM_TRAIN, _write_idx_files

from keras_mtl import datasets
from keras_mtl.datasets import multi_mnist

# Written once at import: the test case reads EXAMPLE_DIR when it is set up.
FAKE_FILES = Path(tempfile.mkdtemp(prefix="keras_mtl_idx_"))
_write_idx_files(FAKE_FILES, gzipped=True)


class _IdxBuilderTest(tfds.testing.DatasetBuilderTestCase):
    EXAMPLE_DIR = str(FAKE_FILES)
    DL_EXTRACT_RESULT = dict(multi_mnist._IDX_FILES)
    SPLITS = {"train": NUM_TRAIN, "test": NUM_TEST}
    # The builders declare no checksums (the Debian copies are re-gzipped, see the README).
    SKIP_CHECKSUMS = True


class MultiMnistBuilderTest(_IdxBuilderTest):
    DATASET_CLASS = datasets.MultiMnist


class MultiFashionBuilderTest(_IdxBuilderTest):
    DATASET_CLASS = datasets.MultiFashion


del _IdxBuilderTest  # not a test case itself: it has no builder
