"""The shared parameters known at compile, without data: the columns of a method's parameter-sized state.

A method that keeps a row per task and a column per shared parameter (the
columns of `TaskGradients.jacobian` in parameter mode: MoCo's tracked
gradients, ExcessMTL's accumulated squares) declares it at compile with
`MultiTaskState.parameter_variable`, before any step has found the shared
parameters. `shared_parameters` finds them then, by the engines' own rule;
`check_shared_parameters`, called by each engine while it traces a step,
makes sure the step's shared parameters are still those the state was
sized for (they change when a layer is frozen, or its variables replaced,
after compile).
"""

from keras_mtl.training import backends, tasks


def shared_parameters(model, method):
    """The shared trainable variables, in `model.trainable_variables` order, found without data.

    The variables of the layers named in `shared_layers` when the model
    names them; else, for a functional model, those that the outputs of two
    tasks or more reach, read by the engine of the backend in use from a
    trace of the model (never run) by the rule its steps apply (a gradient
    that exists on TensorFlow, a jaxpr dependency on JAX). So a layer with
    one output per task (MMoE) shares its experts but not its per-task
    gates, as in the steps. A subclassed model without `shared_layers` has
    no input specification to trace from, and an unbuilt model no variables
    yet: both are errors naming the method.
    """
    if not model.built:
        raise ValueError(
            f"{method.display_name} keeps a state per shared parameter, sized when the model is compiled, but the model is "
            "not built yet: build it first (call it on a batch, or `model.build(input_shape)`), then compile."
        )
    variables = model.trainable_variables
    if model.shared_layers is not None:
        layers = [tasks.named_layer(model, name, "shared_layers") for name in model.shared_layers]
        unbuilt = [layer.name for layer in layers if not layer.built]
        if unbuilt:
            raise ValueError(
                f"{method.display_name} sizes its state by the shared layers' variables, but {unbuilt} are not built yet: build the model first, then compile."
            )
        named = {id(variable) for layer in layers for variable in layer.trainable_variables}
        return [variable for variable in variables if id(variable) in named]
    if not tasks.is_functional(model):
        raise ValueError(
            f"{method.display_name} keeps a state per shared parameter, sized when the model is compiled, and the shared "
            "parameters of a subclassed model are known only once a step runs: name its shared layers "
            "(`shared_layers=[...]` in the model's constructor), or build it as a functional model."
        )
    reached = backends.engine().output_dependencies(model)
    shared = [variable for i, variable in enumerate(variables) if sum(i in task for task in reached) >= 2]
    if not shared:
        raise ValueError(
            f"{method.display_name}: no parameter is shared by two tasks: there is nothing for a gradient method to balance."
        )
    return shared


def check_state_fits(model):
    """`check_shared_parameters` on the shared parameters found without data, before `fit` runs a step.

    The steps check again while they are traced; this check comes first
    because Keras' JAX `fit` releases the variables' values before the first
    step, and an error while that step is traced would leave the model
    without them.
    """
    if model.multi_task_state.parameter_columns is not None:
        check_shared_parameters(model, shared_parameters(model, model.multi_task_method))


def check_shared_parameters(model, shared_variables):
    """Raises while a step is traced if its shared variables are not those the method's state was sized for.

    Nothing to check for a method without parameter-sized state. The error
    names the variables that differ, before the step runs.
    """
    state = model.multi_task_state
    sized_for = state.parameter_columns
    found = tuple(variable.path for variable in shared_variables)
    if sized_for is None or found == sized_for:
        return
    gone = [path for path in sized_for if path not in found]
    new = [path for path in found if path not in sized_for]
    raise ValueError(
        f"{model.multi_task_method.display_name} keeps a state per shared parameter, sized at compile for the shared "
        f"variables {list(sized_for)}, but this step shares {list(found)}"
        + (f": {gone} no longer shared or trainable" if gone else "")
        + (f"; {new} newly shared" if new else "")
        + ("" if gone or new else " (in another order)")
        + ". Compile the model again after changing which of its variables are trainable or shared."
    )
