"""Declared constructor arguments: one way to say what an argument accepts, checked before anything is built.

A method or architecture declares each constructor argument once, next to
its definition:

>>> @declare_arguments(beta=Real(minimum=0, maximum=1, maximum_open=True), window=Integer(minimum=2))
... class MyMethod(keras_mtl.LossWeighting): ...

`declare_arguments` wraps the constructor (or builder function): every
declared argument is checked and converted (a float, an int, a tuple of
widths…) before the body runs, so bad input raises before any state exists,
and every error names the class and the argument, e.g. "SoftAdapt: `window`
must be an integer ≥ 2, got nan.". A class inherits its bases'
declarations (`losses` and `name` for every method). The declarations are
kept in `arguments` on the class or function: the generated argument test
reads them, and refuses a constructor argument without one.
"""

import functools
import inspect
import math
import numbers

import keras
import numpy as np


class Argument:
    """What one argument accepts. `check` returns the value converted, or raises naming `owner` and `name`."""

    # Optional arguments also accept None (the argument's "unset").
    optional = False

    def check(self, value, name, owner):
        if value is None and self.optional:
            return None
        return self._check(
            value, lambda problem, error=ValueError: _fail(owner, name, problem or self.describe(), value, error)
        )

    def describe(self):
        """The accepted values, in words: the end of "`x` must be …"."""
        return self._describe() + (" (or None)" if self.optional else "")

    def _describe(self):
        raise NotImplementedError

    def out_of_range(self):
        """Values of the right type that the argument refuses (for the generated test)."""
        return []

    def _check(self, value, fail):
        raise NotImplementedError


def _fail(owner, name, description, value, error):
    raise error(f"{owner}: `{name}` must be {description}, got {value!r}.")


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _interval(minimum, maximum, minimum_open, maximum_open):
    if minimum is not None and maximum is not None:
        return f"in {'(' if minimum_open else '['}{minimum:g}, {maximum:g}{')' if maximum_open else ']'}"
    if minimum is not None:
        return f"{'>' if minimum_open else '≥'} {minimum:g}"
    if maximum is not None:
        return f"{'<' if maximum_open else '≤'} {maximum:g}"
    return ""


class Real(Argument):
    """A finite real number, optionally bounded; converted to float. `*_open` makes a bound strict."""

    def __init__(self, minimum=None, maximum=None, minimum_open=False, maximum_open=False, optional=False):
        self.minimum, self.maximum = minimum, maximum
        self.minimum_open, self.maximum_open = minimum_open, maximum_open
        self.optional = optional

    def _describe(self):
        interval = _interval(self.minimum, self.maximum, self.minimum_open, self.maximum_open)
        return f"a finite number {interval}".rstrip()

    def in_range(self, value):
        low_ok = self.minimum is None or (value > self.minimum if self.minimum_open else value >= self.minimum)
        high_ok = self.maximum is None or (value < self.maximum if self.maximum_open else value <= self.maximum)
        return low_ok and high_ok

    def _check(self, value, fail):
        if not _is_real(value):
            fail(None, TypeError)
        value = float(value)
        if not math.isfinite(value) or not self.in_range(value):
            fail(None)
        return value

    def out_of_range(self):
        values = []
        if self.minimum is not None:
            values.append(self.minimum if self.minimum_open else self.minimum - 1.0)
        if self.maximum is not None:
            values.append(self.maximum if self.maximum_open else self.maximum + 1.0)
        return values


class Integer(Argument):
    """An integer (an integral float such as 2.0 too), optionally bounded; converted to int."""

    def __init__(self, minimum=None, maximum=None, optional=False):
        self.minimum, self.maximum, self.optional = minimum, maximum, optional

    def _describe(self):
        interval = _interval(self.minimum, self.maximum, False, False)
        return f"an integer {interval}".rstrip()

    def _check(self, value, fail):
        if not _is_real(value):
            fail(None, TypeError)
        if not math.isfinite(value) or value != int(value):
            fail(None)
        value = int(value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            fail(None)
        return value

    def out_of_range(self):
        values = [2.5]
        if self.minimum is not None:
            values.append(self.minimum - 1)
        if self.maximum is not None:
            values.append(self.maximum + 1)
        return values


class Boolean(Argument):
    """True or False (numpy's too)."""

    def _describe(self):
        return "True or False"

    def _check(self, value, fail):
        if not isinstance(value, (bool, np.bool_)):
            fail(None, TypeError)
        return bool(value)


class Choice(Argument):
    """One of a few strings."""

    def __init__(self, options):
        self.options = tuple(options)

    def _describe(self):
        return "one of " + ", ".join(repr(option) for option in self.options)

    def _check(self, value, fail):
        if not isinstance(value, str):
            fail(None, TypeError)
        if value not in self.options:
            fail(None)
        return value

    def out_of_range(self):
        return ["not-an-option"]


class Text(Argument):
    """A non-empty string (a name, a task's name)."""

    def __init__(self, optional=False, what="a non-empty string"):
        self.optional, self.what = optional, what

    def _describe(self):
        return self.what

    def _check(self, value, fail):
        if not isinstance(value, str):
            fail(None, TypeError)
        if not value:
            fail(None)
        return value

    def out_of_range(self):
        return [""]


class TaskNames(Argument):
    """A non-empty list of task names (not one string); converted to a list."""

    def __init__(self, optional=False):
        self.optional = optional

    def _describe(self):
        return "a non-empty list of task names"

    def _check(self, value, fail):
        if isinstance(value, str):
            fail(f"a list of task names, not a string (pass [{value!r}])", TypeError)
        if not isinstance(value, (list, tuple)) or not all(isinstance(task, str) for task in value):
            fail(None, TypeError)
        if not value:
            fail(None)
        return list(value)

    def out_of_range(self):
        return [[]]


class Units(Argument):
    """Layer widths: one int or a sequence of ints ≥ 1; converted to a tuple."""

    def __init__(self, allow_empty=False):
        self.allow_empty = allow_empty

    def _describe(self):
        return "an integer ≥ 1 or a list of them" + (" (may be empty)" if self.allow_empty else "")

    def _check(self, value, fail):
        widths = (value,) if _is_real(value) else value
        if isinstance(widths, str) or not isinstance(widths, (list, tuple, np.ndarray)):
            fail(None, TypeError)
        if not all(_is_real(width) for width in widths):
            fail(None, TypeError)
        if not all(math.isfinite(width) and width == int(width) and width >= 1 for width in widths):
            fail(None)
        if not len(widths) and not self.allow_empty:
            fail(None)
        return tuple(int(width) for width in widths)

    def out_of_range(self):
        return [0, [16, 0], [16, 2.5]] + ([] if self.allow_empty else [[]])


class PerTask(Argument):
    """One value per task: a dict {task: value} (when `by_name`) or a list in the model's output order.

    Each value is checked by `item`. The list or dict is kept as given
    (converted values); `per_task` lines it up with the tasks once they are
    known, in `build_state`.
    """

    def __init__(self, item, by_name=True, optional=True):
        self.item, self.by_name, self.optional = item, by_name, optional

    def _describe(self):
        form = (
            "a dict {task: value} or a list in the model's output order"
            if self.by_name
            else "a list in the model's output order"
        )
        return f"{form}, each value {self.item.describe()}"

    def _check(self, value, fail):
        if isinstance(value, dict) and self.by_name:
            items = list(value.values())
        elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
            items = list(value)
        else:
            fail(None, TypeError)
        if isinstance(value, dict) and not all(isinstance(task, str) for task in value):
            fail(None, TypeError)
        converted = []
        for item in items:
            if not _is_real(item):
                fail(None, TypeError)
            if not math.isfinite(item) or not self.item.in_range(float(item)):
                fail(None)
            converted.append(float(item))
        return dict(zip(value, converted)) if isinstance(value, dict) else converted

    def out_of_range(self):
        return [[bad, 1.0] for bad in self.item.out_of_range()] + [[math.nan, 1.0], [math.inf, 1.0]]


def per_task(values, task_names, name, owner):
    """`values` (a `PerTask` argument's dict or list) as a list in `task_names` order, or an error naming what is off."""
    task_names = list(task_names)
    if isinstance(values, dict):
        missing = sorted(set(task_names) - set(values))
        unknown = sorted(set(values) - set(task_names))
        if missing or unknown:
            raise ValueError(
                f"{owner}: `{name}` must name every task {task_names} once; missing {missing}, unknown {unknown}."
            )
        return [values[task] for task in task_names]
    if len(values) != len(task_names):
        raise ValueError(f"{owner}: `{name}` has {len(values)} entries for {len(task_names)} tasks {task_names}.")
    return list(values)


class Losses(Argument):
    """The per-task losses: one loss for every task, or a dict {task: loss} (a loss: what `keras.losses.get` takes)."""

    optional = True

    def _describe(self):
        return "a dict {task: loss} keyed by output name, or one loss for every task (a name, a keras.losses.Loss or a function)"

    def _check(self, value, fail):
        if isinstance(value, (list, tuple)):
            fail("a dict {task: loss} keyed by output name, not a list", TypeError)
        losses = value.values() if isinstance(value, dict) else [value]
        if not all(isinstance(loss, (str, dict, keras.losses.Loss)) or callable(loss) for loss in losses):
            fail(None, TypeError)
        return value


class Method(Argument):
    """An inner multi-task method: a registered id, a config dict or an instance."""

    def _describe(self):
        return "a method id such as 'mgda', a method's config dict or a method instance"

    def _check(self, value, fail):
        from keras_mtl.methods import MultiTaskLoss  # the methods import this module
        from keras_mtl.registry import available

        if not isinstance(value, (str, dict, MultiTaskLoss)):
            fail(None, TypeError)
        if isinstance(value, str) and value not in available():
            fail(f"a registered method id ({', '.join(available())})")
        return value

    def out_of_range(self):
        return ["not-a-method"]


class Activation(Argument):
    """An activation: a name `keras.activations.get` knows, a function, or None (linear)."""

    optional = True

    def _describe(self):
        return "an activation name such as 'relu' or a function"

    def _check(self, value, fail):
        if not (isinstance(value, str) or callable(value)):
            fail(None, TypeError)
        if isinstance(value, str):
            try:
                keras.activations.get(value)
            except ValueError:
                fail(None)
        return value

    def out_of_range(self):
        return ["not-an-activation"]


class Tasks(Argument):
    """An architecture's tasks: a non-empty dict {task name: output units ≥ 1}; copied with int widths."""

    def _describe(self):
        return "a non-empty dict {task name: output units ≥ 1}"

    def _check(self, value, fail):
        if (
            not isinstance(value, dict)
            or not all(isinstance(task, str) for task in value)
            or not all(_is_real(units) for units in value.values())
        ):
            fail(None, TypeError)
        if not value or not all(
            math.isfinite(units) and units == int(units) and units >= 1 for units in value.values()
        ):
            fail(None)
        return {task: int(units) for task, units in value.items()}

    def out_of_range(self):
        return [{}, {"a": 0}, {"a": 2.5}]


class SymbolicInput(Argument):
    """A builder's input: a `keras.Input` (a symbolic tensor)."""

    def _describe(self):
        return "a keras.Input"

    def _check(self, value, fail):
        if not isinstance(value, keras.KerasTensor):
            fail(None, TypeError)
        return value


def declare_arguments(**declarations):
    """Declares and checks constructor (or builder) arguments: a decorator for a class or a function.

    The wrapped constructor checks every declared argument (given or
    default), passes on the converted values, and runs the body only if all
    pass. On a class, the declarations add to those of its bases.
    """

    def decorate(target):
        if not isinstance(target, type):
            target.arguments = dict(declarations)
            return _checking(target, lambda: target.arguments, lambda: target.__name__, method=False)
        inherited = {}
        for base in reversed(target.__mro__[1:]):
            inherited.update(getattr(base, "arguments", {}))
        target.arguments = {**inherited, **target.__dict__.get("arguments", {}), **declarations}
        init = target.__dict__.get("__init__")
        if init is not None and not getattr(init, "checks_arguments", False):
            target.__init__ = _checking(
                init, lambda self: target.arguments, lambda self: type(self).__name__, method=True
            )
        return target

    return decorate


def _checking(function, get_arguments, get_owner, method):
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        context = args[:1] if method else ()
        declared, owner = get_arguments(*context), get_owner(*context)
        for name, value in bound.arguments.items():
            if name in declared:
                bound.arguments[name] = declared[name].check(value, name, owner)
        return function(*bound.args, **bound.kwargs)

    # Keras' Operation.__new__ reads the constructor's arguments with getfullargspec, which reads this.
    checked.__signature__ = signature
    checked.checks_arguments = True
    return checked


def undeclared(target):
    """The constructor arguments of a class or function that have no declaration (for the generated test)."""
    function = target.__init__ if isinstance(target, type) else target
    parameters = inspect.signature(function).parameters.values()
    names = [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    declared = getattr(target, "arguments", {})
    return [name for name in names if name not in declared]
