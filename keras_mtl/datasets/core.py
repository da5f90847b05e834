"""The structure every keras_mtl data loader returns: splits plus task specs.

A loader returns a `MultiTaskData`: three unbatched `tf.data.Dataset`s of
`(x, {task: y})` examples and a `TaskSpec` per task, which says how to build
that task's head, which loss to train it with and which metric to report. A
benchmark can therefore run on any dataset without knowing it:

>>> data = keras_mtl.datasets.multi_mnist_5k()
>>> heads = {name: spec.head(name) for name, spec in data.tasks.items()}
>>> method = keras_mtl.get("uw_so", data.losses())
>>> train = data.train.shuffle(4096).batch(256)

Target shapes: a classification task with `num_outputs > 1` (softmax over
classes) has integer labels of shape `()`; a binary task (`num_outputs == 1`)
and a regression task have float32 targets of shape `(num_outputs,)`, the
shape of their head's output, so that per-task metrics never broadcast a
`(batch,)` target against a `(batch, 1)` prediction.
"""

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a benchmark needs to know about one task.

    Attributes:
        kind: `"classification"` or `"regression"`.
        num_outputs: the head's width: the number of classes (1 for a binary
            task, which gets a sigmoid) or the number of regressed values.
        loss: a `keras.losses.get` identifier matching the head's activation.
        metric: a `keras.metrics.get` identifier reported on the test split.
        higher_is_better: whether a larger `metric` is better.
        target_mean: the mean of the standardisation applied to the targets in
            the pipelines, `y = (raw - target_mean) / target_std`; 0 when the
            targets are raw.
        target_std: its standard deviation; 1 when the targets are raw.
            Multiply errors by `target_std` to report them in the data's own units.
    """

    kind: str
    num_outputs: int
    loss: str
    metric: str
    higher_is_better: bool
    target_mean: float = 0.0
    target_std: float = 1.0

    def __post_init__(self):
        if self.kind not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"Unknown task kind {self.kind!r}.")

    @property
    def activation(self):
        """The head's output activation, matching `loss`."""
        if self.kind == REGRESSION:
            return "linear"
        return "sigmoid" if self.num_outputs == 1 else "softmax"

    def head(self, name):
        """A fresh `Dense` output layer for this task, named `name`."""
        return keras.layers.Dense(self.num_outputs, activation=self.activation, name=name)


def classification(num_classes):
    """Spec of a `num_classes`-way task (sigmoid and binary cross-entropy if 2 or fewer).

    Args:
        num_classes: the number of classes.

    Returns:
        A `TaskSpec`, reported by accuracy.
    """
    if num_classes <= 2:
        return TaskSpec(CLASSIFICATION, 1, "binary_crossentropy", "binary_accuracy", True)
    return TaskSpec(CLASSIFICATION, num_classes, "sparse_categorical_crossentropy", "sparse_categorical_accuracy", True)


def regression(num_outputs=1, target_mean=0.0, target_std=1.0):
    """Spec of a mean-squared-error task reported by mean absolute error.

    Args:
        num_outputs: the number of regressed values, default 1.
        target_mean: the mean subtracted from the raw targets, default 0.0.
        target_std: the standard deviation they were divided by, default 1.0.

    Returns:
        A `TaskSpec`.
    """
    return TaskSpec(REGRESSION, num_outputs, "mse", "mean_absolute_error", False, float(target_mean), float(target_std))


@dataclasses.dataclass(frozen=True)
class MultiTaskData:
    """Train, validation and test pipelines of `(x, {task: y})` and their tasks.

    The datasets are unbatched and unshuffled; the caller batches them. `x`
    is one tensor, a dict of tensors (a model with several inputs), or, in
    the multi-input setting (`zip_tasks`), `{task: that task's input}`.

    Build one from NumPy arrays with `MultiTaskData.from_arrays`, from
    `tf.data.Dataset`s with the constructor, from tfds with `from_tfds`, or
    from one data set per task with `zip_tasks`. A `MultiTaskData` made by
    `from_arrays` or `zip_tasks` of such data can be pickled (its arrays are
    sent, e.g. to Ray workers); one of bare pipelines cannot, since a
    `tf.data.Dataset` does not pickle: send the function that loads it instead.

    Attributes:
        train: the training `tf.data.Dataset` of `(x, {task: y})`.
        validation: the validation one.
        test: the test one.
        tasks: `{task: TaskSpec}`, in the order of the `y` dicts.
        metadata: facts about the data that are not tasks, e.g. a generated
            set's ground truth; empty for real data sets.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    tasks: Mapping[str, TaskSpec]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # Read-only views, so that the frozen object cannot change underneath a run.
        object.__setattr__(self, "tasks", types.MappingProxyType(dict(self.tasks)))
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))
        for split in ("train", "validation", "test"):
            spec = getattr(self, split).element_spec
            if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)):
                raise ValueError(
                    f"MultiTaskData: the {split} split must yield `(x, {{task: y}})` examples; its elements are {spec}."
                )
            missing = [task for task in self.tasks if task not in spec[1]]
            if missing:
                raise ValueError(
                    f"MultiTaskData: the {split} split has no targets for the tasks {missing} (its targets: {sorted(spec[1])})."
                )

    @classmethod
    def from_arrays(cls, tasks, train, validation, test, metadata=None):
        """A `MultiTaskData` from in-memory arrays; it pickles (the arrays travel).

        Args:
            tasks: `{task: TaskSpec}`.
            train: `(x, {task: y})` of arrays with one row per example (`x`
                may be a dict of arrays).
            validation: the same for the validation split.
            test: the same for the test split.
            metadata: see `MultiTaskData`.

        >>> data = MultiTaskData.from_arrays(
        ...     {"digit": classification(10), "size": regression()},
        ...     train=(x[:800], {"digit": d[:800], "size": s[:800]}),
        ...     validation=(x[800:900], {...}), test=(x[900:], {...}))
        """
        splits = {"train": train, "validation": validation, "test": test}
        for name, split in splits.items():
            if not (isinstance(split, tuple) and len(split) == 2 and isinstance(split[1], dict)):
                raise ValueError(
                    f"MultiTaskData.from_arrays: {name} must be `(x, {{task: y}})`, got {type(split).__name__}."
                )
            x, targets = split
            missing = [task for task in tasks if task not in targets]
            if missing:
                raise ValueError(f"MultiTaskData.from_arrays: {name} has no targets for the tasks {missing}.")
            lengths = {
                f"x[{key!r}]" if key is not None else "x": len(array)
                for key, array in (x.items() if isinstance(x, dict) else [(None, x)])
            }
            lengths.update({f"y[{task!r}]": len(targets[task]) for task in tasks})
            if len(set(lengths.values())) > 1:
                raise ValueError(f"MultiTaskData.from_arrays: the arrays of {name} differ in length: {lengths}.")
        data = cls(
            *(_slices(x, {task: targets[task] for task in tasks}) for x, targets in splits.values()),
            tasks,
            metadata or {},
        )
        object.__setattr__(
            data, "_recipe", (_from_arrays_recipe, (dict(tasks), train, validation, test, dict(metadata or {})))
        )
        return data

    def __reduce__(self):
        # A tf.data.Dataset does not pickle; data made from arrays is rebuilt from them.
        recipe = self.__dict__.get("_recipe")
        if recipe is None:
            raise TypeError(
                "This MultiTaskData holds tf.data pipelines, which cannot be pickled (e.g. sent to Ray workers): pass the function "
                "that returns it instead (for example `data=my_package.data.load`), or build it with MultiTaskData.from_arrays."
            )
        return recipe

    @property
    def input_shape(self):
        """The shape of one `x`, e.g. `(28, 28, 1)`; a dict of shapes when `x` is a dict."""
        spec = self.train.element_spec[0]
        if isinstance(spec, dict):
            return {name: tuple(s.shape) for name, s in spec.items()}
        return tuple(spec.shape)

    @property
    def inputs_per_task(self):
        """Whether every task has an input of its own (`x` is `{task: input}`, the multi-input setting of `zip_tasks`)."""
        spec = self.train.element_spec[0]
        return isinstance(spec, dict) and set(spec) == set(self.tasks)

    def select_tasks(self, names):
        """The same data with the tasks `names` only (and, with inputs per task, their inputs only)."""
        names = list(names)
        unknown = [name for name in names if name not in self.tasks]
        if unknown:
            raise ValueError(f"MultiTaskData.select_tasks: unknown tasks {unknown}; the tasks are {list(self.tasks)}.")
        per_task = self.inputs_per_task

        def select(x, y):
            return ({name: x[name] for name in names} if per_task else x), {name: y[name] for name in names}

        splits = (getattr(self, split).map(select) for split in ("train", "validation", "test"))
        return MultiTaskData(*splits, {name: self.tasks[name] for name in names}, self.metadata)

    def take(self, count):
        """The same data with every split cut to its first `count` examples (pickles if this one does)."""
        data = MultiTaskData(
            *(getattr(self, split).take(count) for split in ("train", "validation", "test")), self.tasks, self.metadata
        )
        if "_recipe" in self.__dict__:
            object.__setattr__(data, "_recipe", (_take_recipe, (self, count)))
        return data

    def losses(self):
        """`{task: loss}`, ready for `keras_mtl.get(method_id, losses)`."""
        return {name: spec.loss for name, spec in self.tasks.items()}

    def metrics(self):
        """`{task: [metric]}`, ready for `model.compile(metrics=...)`."""
        return {name: [spec.metric] for name, spec in self.tasks.items()}


def _slices(x, targets):
    return tf.data.Dataset.from_tensor_slices((x, targets))


def _from_arrays_recipe(tasks, train, validation, test, metadata):
    return MultiTaskData.from_arrays(tasks, train, validation, test, metadata)


def _take_recipe(data, count):
    return data.take(count)


def _zip_recipe(per_task):
    return zip_tasks(per_task)


def zip_tasks(per_task):
    """One `MultiTaskData` from one data set per task: each task has inputs of its own (LibMTL's multi-input setting).

    As in Office-31 or Office-Home, where each task is a domain with its own
    images: example i of the result is `({task: x_task_i}, {task: y_task_i})`,
    and the model takes one input per task (named after it), typically
    through a shared encoder with a head per task (see the guide "Your model
    and data", `docs/guides/your-model.md`). Training examples zip the tasks'
    training sets, the shorter ones repeated so that an epoch covers the
    longest; validation and test examples zip without repeating, so each
    task is scored on as many of its examples as the smallest domain has:
    give the domains evaluation splits of one size.

    Args:
        per_task: `{task: MultiTaskData}`, each with the one task `task`.

    Returns:
        A `MultiTaskData` with `inputs_per_task` true; it pickles when every
        part does.
    """
    if not per_task:
        raise ValueError("zip_tasks: no tasks given.")
    for name, data in per_task.items():
        if list(data.tasks) != [name]:
            raise ValueError(
                f"zip_tasks: the data of task {name!r} must have that one task, it has {list(data.tasks)}."
            )

    def zipped(split):
        parts = {
            name: getattr(data, split).map(lambda x, y, name=name: (x, y[name])) for name, data in per_task.items()
        }
        if split == "train":
            lengths = {name: int(part.cardinality()) for name, part in parts.items()}
            if any(length < 0 for length in lengths.values()):
                raise ValueError(
                    f"zip_tasks: the training sets' lengths must be known to repeat the shorter ones; got {lengths} (-2: unknown); use `.apply(tf.data.experimental.assert_cardinality(n))`."
                )
            longest = max(lengths.values())
            parts = {name: part.repeat() if lengths[name] < longest else part for name, part in parts.items()}
            return tf.data.Dataset.zip(parts).take(longest).map(_split_pairs)
        return tf.data.Dataset.zip(parts).map(_split_pairs)

    data = MultiTaskData(
        zipped("train"), zipped("validation"), zipped("test"), {name: d.tasks[name] for name, d in per_task.items()}
    )
    if all("_recipe" in d.__dict__ for d in per_task.values()):
        object.__setattr__(data, "_recipe", (_zip_recipe, (dict(per_task),)))
    return data


def _split_pairs(pairs):
    return {name: pair[0] for name, pair in pairs.items()}, {name: pair[1] for name, pair in pairs.items()}


def from_arrays(x, targets, tasks, train, validation, test, metadata=None):
    """A `MultiTaskData` from in-memory arrays and three index arrays (`MultiTaskData.from_arrays` of the three slices).

    Args:
        x: the inputs, one row per example.
        targets: `{task: array}`, one row per example.
        tasks: `{task: TaskSpec}`.
        train, validation, test: integer indices of each split's examples.
        metadata: see `MultiTaskData`.
    """

    def split(indices):
        return x[indices], {name: targets[name][indices] for name in tasks}

    return MultiTaskData.from_arrays(tasks, split(train), split(validation), split(test), metadata)


# tfds split strings of the three splits, for sets with train, validation and
# test splits, with train and test only (validation is the end of train), and
# with train only (cut 80/10/10).
OWN_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
TRAIN_TEST_SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
TRAIN_ONLY_SPLITS = {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}


def from_tfds(name, splits, to_example, tasks, data_dir=None, **load_kwargs):
    """A `MultiTaskData` from tfds set `name`.

    Args:
        name: the tfds name (with a config if any, e.g. "qm9/dimenet").
        splits: `{"train": split, "validation": split, "test": split}` of tfds
            split strings, e.g. `OWN_SPLITS`.
        to_example: maps a tfds example dict to `(x, {task: y})`.
        tasks: `{task: TaskSpec}`.
        data_dir: the tfds data directory (tfds's default when None).
        **load_kwargs: more `tfds.load` arguments.
    """

    def load(split):
        ds = tfds.load(name, split=split, data_dir=data_dir, **load_kwargs)
        return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)

    return MultiTaskData(**{key: load(split) for key, split in splits.items()}, tasks=tasks)


def split_indices(num_examples, validation_fraction, test_fraction, seed):
    """Disjoint shuffled (train, validation, test) indices of `num_examples` examples."""
    order = np.random.default_rng(seed).permutation(num_examples)
    num_validation = int(round(validation_fraction * num_examples))
    num_test = int(round(test_fraction * num_examples))
    return (
        order[num_validation + num_test :],
        order[:num_validation],
        order[num_validation : num_validation + num_test],
    )
