"""PLE: stacked CGC extraction networks (Tang et al., RecSys 2020)."""

from keras_mtl.architectures._common import BUILDER, COUNT, EXPERTS, towers
from keras_mtl.architectures.cgc import CGC
from keras_mtl.arguments import Boolean, declare_arguments
from keras_mtl.training.model import MultiTaskModel


@declare_arguments(
    **BUILDER, num_levels=COUNT, num_shared_experts=COUNT, num_task_experts=COUNT, **EXPERTS, gate_use_bias=Boolean()
)
def ple(
    inputs,
    tasks,
    num_levels=2,
    num_shared_experts=1,
    num_task_experts=1,
    expert_units=(16,),
    expert_activation="relu",
    gate_use_bias=False,
    tower_units=(8,),
    tower_activation="relu",
    **model_kwargs,
):
    """Progressive Layered Extraction: `num_levels` CGC layers, then one tower per task.

    Tang et al. 2020, section 4: level j's task-k experts and gate read task
    k's output of level j − 1 (the input at level 1), its shared experts and
    shared gate read the shared output of level j − 1; the shared gate weighs
    all the level's experts. Levels 1 … L − 1 are `CGC(shared_gate=True)`
    layers named `ple_level_1`, …; the last level (`ple_level_L`) has no
    shared gate, and its task outputs feed the towers. The paper's public
    data experiments use two levels, the default here.

    Through the shared gates, a lower level's task-specific experts reach
    every task (the progressive sharing the paper describes); the last
    level's task-specific experts reach only their own task. Gradient methods
    in parameter mode therefore see lower levels as shared, and the last
    level's task experts, gates and the towers as task-specific.

    Args:
        inputs: a `keras.Input` of shape (features,).
        tasks: dict {task name: output units}; linear outputs named after the tasks.
        num_levels: the number of extraction networks (1 gives CGC), default 2.
        num_shared_experts: the experts every task's gate sees, default 1 (each level's `CGC` settings).
        num_task_experts: each task's own experts, default 1.
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        gate_use_bias: whether the gates have a bias, default `False`.
        tower_units: the widths of each tower's hidden Dense layers (`{task}_tower_i`; may be
            empty), default `(8,)`.
        tower_activation: their activation, default `"relu"`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel`.

    Returns:
        A `keras_mtl.MultiTaskModel` with one output per task.

    Examples:
        ```python
        inputs = keras.Input((100,))
        model = keras_mtl.architectures.ple(inputs, {"ctr": 1, "cvr": 1}, num_levels=2, num_task_experts=2)
        model.compile("adam", loss=keras_mtl.get("pcgrad", {"ctr": "mse", "cvr": "mse"}))
        ```
    """
    features = inputs
    for level in range(1, num_levels + 1):
        layer = CGC(
            len(tasks),
            num_shared_experts,
            num_task_experts,
            expert_units,
            expert_activation,
            gate_use_bias,
            shared_gate=level < num_levels,
            name=f"ple_level_{level}",
        )
        features = layer(features)
    return MultiTaskModel(inputs, towers(features, tasks, tower_units, tower_activation), **model_kwargs)
