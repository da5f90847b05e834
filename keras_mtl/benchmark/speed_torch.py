"""The TorchJD side of `keras-mtl speed --peer torchjd`: the same cells timed in PyTorch with TorchJD.

A script, run by `keras_mtl.benchmark.speed` in a child process
(`python speed_torch.py REQUEST.npz`, a JSON object on stdout): PyTorch then
loads nothing beside TensorFlow or JAX (the CUDA wheel's Triton, loaded after
TensorFlow, crashes the process: measured with torch 2.14 and TF 2.21), sets
its own threads, and needs neither Keras nor keras_mtl. The request holds the
cells `(model, mode, K, method)`, each method's TorchJD class and arguments
(`speed.TORCHJD_METHODS`), the number of classes, the steps per repeat, the
thread count, and the batch of each (model, K) as arrays `x_{model}_{K}` and
`labels_{model}_{K}` (the batches keras_mtl trains on; images channels last).

A step is written as TorchJD's documentation writes it, on the twin of
keras_mtl's model (the same layers, PyTorch's default initialisation),
cross-entropy per task and SGD(0.01):
- `ew` and the loss weightings (`torchjd.scalarization`):
  `scalarizer(losses).backward()` and the optimizer step; FAMO then
  recomputes the losses and calls `update`, as keras_mtl's FAMO does in its step;
- parameter mode (`torchjd.aggregation`): `mtl_backward(losses, features)`
  (each head its own task's gradient, the K-row Jacobian of the trunk's
  parameters in one batched backward pass through `torch.vmap`, TorchJD's
  default), then `jac_to_grad(trunk parameters, aggregator)`;
- representation mode: the same on a detached copy of the representation,
  whose aggregated gradient is then backpropagated once through the trunk.
A step time is the fastest of 5 runs of `steps` steps after 3 untimed ones.
"""

import importlib.metadata
import json
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torchjd import aggregation, scalarization
from torchjd.autojac import jac_to_grad, mtl_backward


def versions():
    """'TorchJD 0.18.0 on torch 2.14.1 (cpu)' (torchjd has no `__version__`)."""
    return f"TorchJD {importlib.metadata.version('torchjd')} on torch {torch.__version__} ({_device()})"


def _device():
    """CUDA when PyTorch sees a GPU (as JAX then uses it), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class MultiTaskNet(nn.Module):
    """The PyTorch twin of `speed._model`: the same trunk and one linear head of `num_classes` logits per task."""

    def __init__(self, kind, input_shape, num_tasks, num_classes):
        super().__init__()
        if kind == "mlp":
            self.trunk = nn.Sequential(nn.Linear(input_shape[0], 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU())
            width = 512
        else:
            height, image_width, channels = input_shape  # Keras's (H, W, C); `_tensors` moves C first
            side = lambda pixels: ((pixels - 2) // 2 - 2) // 2  # two valid 3x3 convolutions, each pooled by 2
            self.trunk = nn.Sequential(
                nn.Conv2d(channels, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * side(height) * side(image_width), 64), nn.ReLU(),
            )  # fmt: skip
            width = 64
        self.heads = nn.ModuleList(nn.Linear(width, num_classes) for _ in range(num_tasks))

    def losses(self, features, labels):
        """The K mean cross-entropies of the heads on `features`."""
        return [functional.cross_entropy(head(features), labels[:, k]) for k, head in enumerate(self.heads)]


def make_method(spec, num_tasks):
    """A TorchJD scalarizer or aggregator from `("package.Class", arguments)`; an argument "K" is the task count."""
    path, arguments = spec
    package, name = path.split(".")
    arguments = {key: num_tasks if value == "K" else value for key, value in arguments.items()}
    return getattr({"aggregation": aggregation, "scalarization": scalarization}[package], name)(**arguments)


def make_step(method, net, representation=False):
    """A function `step(x, labels)` doing one training step of `net` with the TorchJD `method`."""
    if isinstance(method, scalarization.Scalarizer):
        method.to(next(net.parameters()).device)
        # UW's and IMTL-L's log-scales are learned with the model.
        optimizer = torch.optim.SGD([*net.parameters(), *method.parameters()], lr=0.01)
        return lambda x, labels: _scalarized_step(net, optimizer, method, x, labels)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    step = _representation_step if representation else _parameter_step
    return lambda x, labels: step(net, optimizer, method, x, labels)


def _scalarized_step(net, optimizer, scalarizer, x, labels):
    optimizer.zero_grad()
    losses = torch.stack(net.losses(net.trunk(x), labels))
    scalarizer(losses).backward()
    optimizer.step()
    if isinstance(scalarizer, scalarization.FAMO):
        # FAMO's weights follow how much each loss fell across the step: the losses after it, same batch.
        with torch.no_grad():
            scalarizer.update(torch.stack(net.losses(net.trunk(x), labels)))


def _parameter_step(net, optimizer, aggregator, x, labels):
    optimizer.zero_grad()
    features = net.trunk(x)
    mtl_backward(net.losses(features, labels), features=features)
    jac_to_grad(net.trunk.parameters(), aggregator)
    optimizer.step()


def _representation_step(net, optimizer, aggregator, x, labels):
    optimizer.zero_grad()
    features = net.trunk(x)
    # A leaf copy of the representation: TorchJD puts the K per-task gradients w.r.t. it in its `.jac`
    # (the heads get their own task's gradient), the aggregator combines them into its `.grad`.
    representation = features.detach().requires_grad_()
    heads = [list(head.parameters()) for head in net.heads]
    mtl_backward(net.losses(representation, labels), features=representation, tasks_params=heads, shared_params=[representation])
    jac_to_grad([representation], aggregator)
    features.backward(representation.grad)  # one backward pass through the trunk
    optimizer.step()


def _tensors(x, labels, device):
    """A numpy batch as tensors on `device`, images moved to channels first."""
    inputs = torch.from_numpy(x)
    if inputs.ndim == 4:
        inputs = inputs.permute(0, 3, 1, 2).contiguous()
    return inputs.to(device), torch.from_numpy(labels).long().to(device)


def step_time(spec, kind, x, labels, num_classes, representation=False, steps=20, repeats=5):
    """Seconds per training step with the TorchJD method `spec` on the batch (x, labels): the fastest repeat."""
    torch.manual_seed(0)
    device = _device()
    net = MultiTaskNet(kind, x.shape[1:], labels.shape[1], num_classes).to(device)
    step = make_step(make_method(spec, labels.shape[1]), net, representation)
    inputs, targets = _tensors(x, labels, device)
    for _ in range(3):
        step(inputs, targets)
    timings = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step(inputs, targets)
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: wait for the last step
        timings.append((time.perf_counter() - start) / steps)
    return min(timings)


def answer(request):
    """The reply to a request (an `np.load`ed npz, see the module docstring): versions, threads and each cell's seconds."""
    query = json.loads(str(request["query"]))
    torch.set_num_threads(query["threads"])
    seconds = []
    for kind, mode, num_tasks, method_id in query["cells"]:
        x, labels = request[f"x_{kind}_{num_tasks}"], request[f"labels_{kind}_{num_tasks}"]
        spec = query["methods"][method_id]
        representation = mode == "representation"
        seconds.append(step_time(spec, kind, x, labels, query["num_classes"], representation=representation, steps=query["steps"]))
        print(f"{kind} {mode} K={num_tasks} {method_id}: {1000 * seconds[-1]:.2f} ms", file=sys.stderr, flush=True)
    return {"versions": versions(), "threads": torch.get_num_threads(), "seconds": seconds}


if __name__ == "__main__":
    with np.load(sys.argv[1]) as request:
        json.dump(answer(request), sys.stdout)
