"""Multi-task views of tfds image sets: CelebA, dSprites and smallNORB.

Each loader reads a tfds set (`tfds.load`, so it downloads and prepares it
unless it is in `data_dir` already) and maps its examples to
`(float32 image, {task: y})`.
"""

import tensorflow as tf

from keras_mtl.datasets import core

CELEB_A_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


def _image(image, image_size=None, scale=255.0):
    image = tf.cast(image, tf.float32) / scale
    return image if image_size is None else tf.image.resize(image, image_size, method="area")


def _scalar(value):
    """A float32 target of shape (1,), the shape of a one-unit head."""
    return tf.reshape(tf.cast(value, tf.float32), (1,))


def load_celeb_a(image_size=(64, 64), attributes=CELEB_A_ATTRIBUTES, data_dir=None):
    """CelebA faces with one binary task per attribute (40 by default).

    Args:
        image_size: `(height, width)` the 218x178 images are resized to.
        attributes: the attribute names to make tasks of.
        data_dir: the tfds data directory.

    Returns:
        A `MultiTaskData` with float32 RGB images in [0, 1], the official
        train / validation / test splits, and a binary task per attribute
        (float32 targets of shape (1,)).
    """

    def to_example(e):
        return _image(e["image"], image_size), {a: _scalar(e["attributes"][a]) for a in attributes}

    tasks = {a: core.classification(2) for a in attributes}
    return core.from_tfds("celeb_a", core.OWN_SPLITS, to_example, tasks, data_dir)


def load_dsprites(data_dir=None):
    """dSprites with a shape classification task and four regression tasks.

    Tasks: "shape" (3 classes) and the latent values "scale", "orientation"
    (radians), "x_position" and "y_position" (both in [0, 1]). dSprites has only
    a train split (737,280 images), cut 80/10/10 in the tfds order.

    Args:
        data_dir: the tfds data folder, default None (tfds's default).

    Returns:
        A `MultiTaskData` with float32 images `(64, 64, 1)` of 0s and 1s.
    """
    regressed = ("scale", "orientation", "x_position", "y_position")

    def to_example(e):
        # dSprites pixels are stored as 0/1, not 0/255.
        targets = {"shape": e["label_shape"], **{f: _scalar(e[f"value_{f}"]) for f in regressed}}
        return _image(e["image"], scale=1.0), targets

    tasks = {"shape": core.classification(3), **{f: core.regression() for f in regressed}}
    return core.from_tfds("dsprites", core.TRAIN_ONLY_SPLITS, to_example, tasks, data_dir)


def load_smallnorb(image_size=(48, 48), data_dir=None):
    """smallNORB toys with four classification tasks and one regression task.

    Tasks: "category" (5), "instance" (10), "azimuth" (18 classes of 20
    degrees; a class rather than a value because azimuth wraps around),
    "lighting" (6) and "elevation", regressed in degrees (30 to 70).

    Args:
        image_size: the size the 96x96 images (left camera) are resized to.
        data_dir: the tfds data directory.

    Returns:
        A `MultiTaskData` with float32 images in [0, 1]; validation is the last
        10% of the train split.
    """

    def to_example(e):
        targets = {
            "category": e["label_category"],
            "instance": e["instance"],
            "azimuth": e["label_azimuth"],
            "lighting": e["label_lighting"],
            # Elevation labels 0..8 stand for 30, 35, ..., 70 degrees.
            "elevation": _scalar(30 + 5 * e["label_elevation"]),
        }
        return _image(e["image"], image_size), targets

    tasks = {
        "category": core.classification(5),
        "instance": core.classification(10),
        "azimuth": core.classification(18),
        "lighting": core.classification(6),
        "elevation": core.regression(),
    }
    return core.from_tfds("smallnorb", core.TRAIN_TEST_SPLITS, to_example, tasks, data_dir)
