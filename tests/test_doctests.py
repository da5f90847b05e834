"""The examples in the pure gradient functions' docstrings run and print what they show (a Gramian in, the weights out)."""

import doctest
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import keras_mtl
from keras_mtl import aggregators

# Every pure function of the aggregators (the lower-case names they export), the registry's `get` and the grid.
WITH_EXAMPLES = [name for name in aggregators.__all__ if name.islower()] + ["get", "scalarization_grid"]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_example(name):
    function = getattr(aggregators, name, None) or getattr(keras_mtl, name)
    module = inspect.getmodule(inspect.unwrap(function)) or aggregators
    globs = {**vars(module), "keras_mtl": keras_mtl}
    tests = doctest.DocTestFinder(recurse=False).find(function, name, globs=globs)
    examples = [test for test in tests if test.examples]
    assert examples, f"{name}'s docstring has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in examples:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} example lines of {name} failed (printed above)"
    assert result.attempted >= 1


def test_the_examples_show_the_defining_property():
    # Independent of the doctests' printed numbers: on the examples' Jacobian, UPGrad's update conflicts with no task
    # (G w >= 0) and MGDA's weights are the min-norm point of the simplex, w = (0.6, 0.4) by hand (d/da of
    # a² − 2a(1 − a) + 2(1 − a)² is 10a − 6).
    jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])
    gramian = jacobian @ jacobian.T
    assert np.all(gramian @ np.asarray(aggregators.upgrad_weights(gramian), np.float64) >= -1e-6)
    np.testing.assert_allclose(np.asarray(aggregators.mgda_weights(gramian)), [0.6, 0.4], rtol=1e-5)


@pytest.mark.parametrize("guide", ["gradient-methods.md"])
def test_guide_examples(guide):
    # The guides' `>>>` blocks are doctests too: a guide cannot show an output the code no longer gives.
    text = (Path(__file__).parents[1] / "docs" / "guides" / guide).read_text()
    text = re.sub(r"^```.*$", "", text, flags=re.M)  # a fence ends an example's expected output
    test = doctest.DocTestParser().get_doctest(text, {}, guide, guide, 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
