"""Every constructor argument of every registered method and architecture is declared, and refuses bad values.

The cases are generated from the declarations (`keras_mtl.arguments`), so a
new method or architecture is covered as soon as it is registered or listed
below; one with an undeclared constructor argument fails
`test_every_argument_is_declared`.
"""

import inspect
import math

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import architectures
from keras_mtl.arguments import Losses, Text, undeclared
from keras_mtl.registry import _METHODS, available

LAYERS = [
    architectures.CGC,
    architectures.CrossStitch,
    architectures.DSelectK,
    architectures.MMoE,
    architectures.TaskAttention,
]
BUILDERS = [
    architectures.shared_bottom,
    architectures.cross_stitch,
    architectures.mmoe,
    architectures.cgc,
    architectures.ple,
    architectures.dselect_k,
    architectures.mtan,
]
TARGETS = [_METHODS[i] for i in available()] + LAYERS + BUILDERS
# String arguments: a string is the right type for them, whatever it says.
TAKES_ANY_STRING = (Text, Losses)


def test_every_architecture_is_listed():
    listed = {target.__name__ for target in LAYERS + BUILDERS}
    public = {
        name for name in dir(architectures) if not name.startswith("_") and callable(getattr(architectures, name))
    }
    assert public == listed


def owner_name(target):
    return target.__name__


def required(target):
    """The smallest valid arguments a target needs (none for the methods)."""
    if target in BUILDERS:
        shape = (8, 8, 3) if target is architectures.mtan else (8,)
        return {"inputs": keras.Input(shape), "tasks": {"a": 1, "b": 2}}
    if target in (architectures.CGC, architectures.DSelectK, architectures.MMoE):
        return {"num_tasks": 2}
    return {}


@pytest.mark.parametrize("target", TARGETS, ids=owner_name)
def test_every_argument_is_declared(target):
    assert undeclared(target) == []


@pytest.mark.parametrize("target", TARGETS, ids=owner_name)
def test_the_defaults_pass(target):
    target(**required(target))


def bad_values(declaration):
    values = [("wrong type", object()), ("NaN", math.nan), ("inf", math.inf), ("-inf", -math.inf)]
    if not isinstance(declaration, TAKES_ANY_STRING):
        values.append(("string", "abc"))
    values += [(f"out of range {value!r}", value) for value in declaration.out_of_range()]
    return values


def cases():
    for target in TARGETS:
        for name, declaration in target.arguments.items():
            for label, value in bad_values(declaration):
                yield pytest.param(target, name, value, id=f"{owner_name(target)}-{name}-{label}")


@pytest.mark.parametrize("target, name, value", list(cases()))
def test_a_bad_argument_is_refused_naming_it_and_the_class(target, name, value):
    arguments = {**required(target), name: value}
    with pytest.raises((TypeError, ValueError)) as error:
        target(**arguments)
    assert f"{owner_name(target)}: `{name}` must be" in str(error.value)


@pytest.mark.parametrize("target", TARGETS, ids=owner_name)
def test_every_declared_argument_is_a_constructor_argument(target):
    function = target.__init__ if isinstance(target, type) else target
    assert set(target.arguments) <= set(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    "make, message",
    [
        # The cases of issue 17, each with the error it now gives.
        (
            lambda: keras_mtl.SmoothTchebycheff(warmup_epochs=math.nan),
            "SmoothTchebycheff: `warmup_epochs` must be an integer ≥ 0, got nan",
        ),
        (lambda: keras_mtl.SoftAdapt(window=math.inf), "SoftAdapt: `window` must be an integer ≥ 2, got inf"),
        (lambda: keras_mtl.Krum(n_byzantine=math.nan), "Krum: `n_byzantine` must be an integer ≥ 0"),
        (lambda: keras_mtl.TrimmedMean(trim_number=math.inf), "TrimmedMean: `trim_number` must be an integer ≥ 0"),
        (lambda: keras_mtl.ExcessMTL(baseline_steps=math.nan), "ExcessMTL: `baseline_steps` must be an integer ≥ 1"),
        (lambda: keras_mtl.SDMGrad(n_iter=math.inf), "SDMGrad: `n_iter` must be an integer ≥ 1"),
        (lambda: architectures.MMoE(2, num_experts=math.nan), "MMoE: `num_experts` must be an integer ≥ 1"),
        (lambda: architectures.CGC(2, num_shared_experts=math.inf), "CGC: `num_shared_experts` must be an integer ≥ 1"),
        (
            lambda: architectures.ple(keras.Input((4,)), {"a": 1}, num_levels=math.nan),
            "ple: `num_levels` must be an integer ≥ 1",
        ),
        (lambda: keras_mtl.DualBalancing(beta="0.9"), "DualBalancing: `beta` must be a finite number in [0, 1)"),
        (lambda: keras_mtl.DualBalancing(beta_sigma="x"), "DualBalancing: `beta_sigma` must be a finite number ≥ 0"),
        (lambda: keras_mtl.MoCo(rho="x"), "MoCo: `rho` must be a finite number ≥ 0"),
        (lambda: keras_mtl.SmoothTchebycheff(preference="abc"), "SmoothTchebycheff: `preference` must be a list"),
        (lambda: keras_mtl.SmoothTchebycheff(preference=0.5), "SmoothTchebycheff: `preference` must be a list"),
        (
            lambda: architectures.mmoe(keras.Input((4,)), {"a": 1}, expert_units=math.nan),
            "mmoe: `expert_units` must be",
        ),
        (lambda: architectures.mmoe(keras.Input((4,)), {"a": 1}, tower_units=math.inf), "mmoe: `tower_units` must be"),
        (lambda: keras_mtl.SoftAdapt(beta=math.nan), "SoftAdapt: `beta` must be a finite number, got nan"),
        (lambda: keras_mtl.AutoLambda(initial_weight=-0.1), "AutoLambda: `initial_weight` must be a finite number ≥ 0"),
        (lambda: keras_mtl.SAM(method="nope"), "SAM: `method` must be a registered method id"),
    ],
)
def test_the_reported_cases(make, message):
    with pytest.raises((TypeError, ValueError)) as error:
        make()
    assert message in str(error.value)


def test_soft_adapt_beta_zero_and_negative_are_documented_choices():
    # β = 0: 1/K (or the loss-weighted mean); β < 0 favours the fastest-falling loss (the docstring says so).
    assert keras_mtl.SoftAdapt(beta=0).beta == 0.0
    assert keras_mtl.SoftAdapt(beta=-1).beta == -1.0


def test_values_are_converted():
    assert keras_mtl.SoftAdapt(window=np.int64(3), beta=np.float32(0.5)).window == 3
    assert type(keras_mtl.Krum(n_selected=2.0).n_selected) is int
    assert architectures.MMoE(2, expert_units=np.int32(4)).expert_units == (4,)


def test_config_preferences_as_a_list_or_a_dict_give_the_same_vector():
    by_list, by_name = keras_mtl.ConFIG(preferences=[2, 1]), keras_mtl.ConFIG(preferences={"b": 1, "a": 2})
    for method in (by_list, by_name):
        method.build_state(None, ["a", "b"])
    assert by_list._preference_vector == by_name._preference_vector == [2.0, 1.0]
    with pytest.raises(ValueError, match=r"ConFIG: `preferences` has 2 entries for 3 tasks"):
        by_list.build_state(None, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"ConFIG: `preferences` must name every task"):
        by_name.build_state(None, ["a", "c"])


def test_stch_preference_must_have_one_entry_per_task():
    with pytest.raises(ValueError, match=r"SmoothTchebycheff: `preference` has 2 entries for 3 tasks"):
        keras_mtl.SmoothTchebycheff(preference=[1, 2]).build_state(None, ["a", "b", "c"])


@pytest.mark.parametrize(
    "target, base, name",
    [(keras_mtl.SoftAdapt, keras.losses.Loss, "window"), (architectures.MMoE, keras.layers.Layer, "num_experts")],
)
def test_a_refused_argument_runs_no_constructor_body(target, base, name, monkeypatch):
    """The checks run before the body: the body's first line, the base constructor, never runs."""
    entered = []
    base_init = base.__init__

    def spy(self, *args, **kwargs):
        entered.append(type(self))
        base_init(self, *args, **kwargs)

    monkeypatch.setattr(base, "__init__", spy)
    with pytest.raises(ValueError):
        target(**{**required(target), name: math.nan})
    assert entered == []
    target(**required(target))
    assert entered[0] is target


@pytest.mark.parametrize("method_id", available())
def test_a_config_passes_its_own_checks(method_id):
    """What `get_config` writes, the declarations accept: a saved method loads again."""
    method = _METHODS[method_id]()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert restored.get_config() == method.get_config()
