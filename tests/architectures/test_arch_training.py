"""Every architecture builds, trains with a loss weighting and a gradient method, saves, reloads, predicts the same;
gradient methods find the right parameters shared."""

import re

import keras
import numpy as np
import pytest
from arch_helpers import TASKS, assert_reloads_identically, fit_two_epochs, regression_data, shared_layers
from conftest import slow_case

from keras_mtl import architectures

VECTOR, IMAGE = (6,), (8, 8, 1)

# builder, its arguments, input shape, then regexes of the layers that must be
# shared and of those that must be task-specific (every variable's layer must
# match one of the two lists).
ARCHITECTURES = {
    "shared_bottom": (architectures.shared_bottom, {}, VECTOR, [r"bottom_1"], [r"[ab]_tower_1", r"[ab]"]),
    "cross_stitch": (
        architectures.cross_stitch,
        {"column_units": (8, 4)},
        VECTOR,
        [r"[ab]_column_[12]", r"cross_stitch_[12]"],
        [r"[ab]"],
    ),
    "mmoe": (
        architectures.mmoe,
        {"num_experts": 3},
        VECTOR,
        [r"mmoe/expert_\d/.*"],
        [r"mmoe/gate_[01]", r"[ab]_tower_1", r"[ab]"],
    ),
    "cgc": (
        architectures.cgc,
        {"num_task_experts": 2},
        VECTOR,
        [r"cgc/shared_expert_0/.*"],
        [r"cgc/task_[01]_expert_[01]/.*", r"cgc/task_[01]_gate", r"[ab]_tower_1", r"[ab]"],
    ),
    "ple": (
        architectures.ple,
        {"num_levels": 2},
        VECTOR,
        # Through level 1's shared gate, its task experts reach every task.
        [r"ple_level_1/(shared|task_[01])_expert_0/.*", r"ple_level_1/shared_gate", r"ple_level_2/shared_expert_0/.*"],
        [r"ple_level_[12]/task_[01]_gate", r"ple_level_2/task_[01]_expert_0/.*", r"[ab]_tower_1", r"[ab]"],
    ),
    "dselect_k": (
        architectures.dselect_k,
        {"num_experts": 4, "num_selected": 2},
        VECTOR,
        [r"dselect_k/expert_\d/.*"],
        # The task-only gates are the layer's own variables, one per task.
        [r"dselect_k", r"[ab]_tower_1", r"[ab]"],
    ),
    "dselect_k_per_example": (
        architectures.dselect_k,
        {"num_experts": 3, "num_selected": 2, "per_example": True},
        VECTOR,
        [r"dselect_k/expert_\d/.*"],
        [r"dselect_k/task_[01]_[zw]", r"[ab]_tower_1", r"[ab]"],
    ),
    "mtan": (
        architectures.mtan,
        {"filters": (4, 8)},
        IMAGE,
        [r"stage_[12]_conv_[12]/.*", r"attention_block_1/.*"],
        [r"[ab]_attention_[12]/.*", r"[ab]"],
    ),
}


def _build(name, seed=0):
    builder, kwargs, input_shape, _, _ = ARCHITECTURES[name]
    keras.utils.set_random_seed(seed)
    return builder(keras.Input(input_shape), TASKS, **kwargs)


def _all_match(names, patterns):
    return {name for name in names if not any(re.fullmatch(pattern, name) for pattern in patterns)}


@pytest.mark.parametrize("method_id", ["ew", "pcgrad"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_trains_saves_and_reloads(name, method_id, tmp_path):
    x, y = regression_data(input_shape=ARCHITECTURES[name][2])
    model = _build(name)
    losses = fit_two_epochs(model, method_id, x, y)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    reloaded = assert_reloads_identically(model, x, tmp_path / "model.keras")
    assert type(reloaded.multi_task_method) is type(model.multi_task_method)


# DSelect-K (its binary-encoded top-k gates are the most graph-specific code) stands for them in CI's `-m guarantee` run.
@pytest.mark.parametrize("name", [slow_case(name, guarantee=name == "dselect_k") for name in sorted(ARCHITECTURES)])
def test_trains_in_graph_mode(name):
    x, y = regression_data(input_shape=ARCHITECTURES[name][2])
    losses = fit_two_epochs(_build(name), "pcgrad", x, y, run_eagerly=False)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_gradient_engine_finds_the_shared_parameters(name):
    _, _, input_shape, shared_patterns, specific_patterns = ARCHITECTURES[name]
    x, y = regression_data(input_shape=input_shape)
    shared, specific = shared_layers(_build(name), x, y)
    assert shared and specific
    assert _all_match(shared, shared_patterns) == set(), f"found shared but should not be: {shared}"
    assert _all_match(specific, specific_patterns) == set(), f"found task-specific but should not be: {specific}"


def test_shared_bottom_trains_in_representation_mode(tmp_path):
    x, y = regression_data()
    keras.utils.set_random_seed(0)
    model = architectures.shared_bottom(keras.Input(VECTOR), TASKS, bottom_units=(8, 4), representation=True)
    assert model.representation == "bottom_2"
    losses = fit_two_epochs(model, "mgda", x, y)
    assert losses[-1] < losses[0]
    assert assert_reloads_identically(model, x, tmp_path / "model.keras").representation == "bottom_2"


LAYERS = [
    architectures.MMoE(
        num_tasks=3, num_experts=5, expert_units=(7, 3), expert_activation="tanh", gate_use_bias=True, name="m"
    ),
    architectures.CGC(
        num_tasks=3,
        num_shared_experts=2,
        num_task_experts=4,
        expert_units=(5,),
        expert_activation="elu",
        gate_use_bias=True,
        shared_gate=True,
    ),
    architectures.DSelectK(
        num_tasks=2,
        num_experts=6,
        num_selected=3,
        gamma=0.5,
        entropy_regularization=0.1,
        per_example=True,
        expert_units=(4,),
        expert_activation="tanh",
    ),
    architectures.CrossStitch(same_task_init=0.7, per_channel=True),
    architectures.TaskAttention(hidden_units=5),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: architectures.mmoe(keras.Input(VECTOR), {}), "mmoe: `tasks` must be a non-empty dict"),
        (
            lambda: architectures.mmoe(keras.Input(VECTOR), {"a": 0}),
            r"mmoe: `tasks` must be a non-empty dict \{task name: output units ≥ 1\}, got \{'a': 0\}",
        ),
        (
            lambda: architectures.mmoe(keras.Input(VECTOR), TASKS, num_experts=0),
            "mmoe: `num_experts` must be an integer ≥ 1",
        ),
        (
            lambda: architectures.shared_bottom(keras.Input(VECTOR), TASKS, bottom_units=()),
            "shared_bottom: `bottom_units` must be",
        ),
        (lambda: architectures.cross_stitch(keras.Input(VECTOR), {"a": 1}), "at least 2 tasks"),
        (
            lambda: architectures.dselect_k(keras.Input(VECTOR), TASKS, num_experts=2, num_selected=3),
            "exceeds num_experts",
        ),
        (
            lambda: architectures.dselect_k(keras.Input(VECTOR), TASKS, gamma=0),
            "dselect_k: `gamma` must be a finite number > 0",
        ),
        (lambda: architectures.mtan(keras.Input(VECTOR), TASKS), "image inputs"),
        (
            lambda: architectures.ple(keras.Input(VECTOR), TASKS, num_levels=1.5),
            "ple: `num_levels` must be an integer ≥ 1",
        ),
    ],
)
def test_bad_arguments_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()
