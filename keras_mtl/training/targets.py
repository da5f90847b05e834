"""Targets against outputs: refuse, naming the task, a target whose shape would broadcast.

Keras' losses align a target and an output by one rule only: when their
ranks differ by one and the longer one's last axis has size 1, that axis is
squeezed (or added to a rank-1 tensor). Anything else is left to the loss,
whose arithmetic then broadcasts silently: labels (n, 3) against an (n, 1)
output give a loss over n × 3 pairs, labels (n,) against (n, 3) outputs
compare every label with every output. keras_mtl sees every task's targets
and outputs at once, so it refuses such pairs before the first step, with
Keras' rule kept and one exception: sparse losses (sparse categorical
cross-entropy and the like), whose integer labels (n,) or (n, 1) stand for
(n, C) outputs, and CTC, whose labels are sequences.

The check reads static shapes, so it runs once, while the step is traced,
and costs nothing per step; a dimension unknown at trace time (a batch of
None) is not compared.
"""

# Losses whose targets are not shaped like the outputs, by a word in their name.
LABEL_LOSSES = ("sparse", "ctc")


def check_shapes(task_names, task_losses, targets, outputs):
    """Raises a ValueError naming the first task whose target would broadcast against its output."""
    for task, loss, target, output in zip(task_names, task_losses, targets, outputs):
        if target is None or _takes_labels(loss):
            continue
        target_shape, output_shape = _aligned(tuple(target.shape), tuple(output.shape))
        if len(target_shape) != len(output_shape) or any(_differ(t, o) for t, o in zip(target_shape, output_shape)):
            raise ValueError(
                f"The targets of task {task!r} have shape {tuple(target.shape)}, its output {tuple(output.shape)}: "
                f"{type(loss).__name__} would broadcast one against the other. Give targets shaped like the output "
                "(a trailing axis of size 1 may be left out or added)."
            )


def _takes_labels(loss):
    names = (type(loss).__name__, getattr(loss, "name", None) or "", getattr(getattr(loss, "fn", None), "__name__", ""))
    return any(word in name.lower() for name in names for word in LABEL_LOSSES)


def _aligned(target, output):
    """Keras' one rule (`squeeze_or_expand_to_same_rank`, as `keras_mtl.methods._same_rank`), on shapes."""
    if len(output) == len(target) + 1 and output[-1] == 1:
        return (target + (1,), output) if len(target) == 1 else (target, output[:-1])
    if len(target) == len(output) + 1 and target[-1] == 1:
        return (target, output + (1,)) if len(output) == 1 else (target[:-1], output)
    return target, output


def _differ(target_size, output_size):
    return target_size is not None and output_size is not None and target_size != output_size
