"""The TorchJD side of `keras-mtl speed --peer torchjd`: the same cells timed in PyTorch with TorchJD.

A script, run by `keras_mtl.benchmark.speed` in a child process
(`python speed_torch.py BATCHES.npz`): PyTorch then loads nothing beside
TensorFlow or JAX (the CUDA wheel's Triton, loaded after TensorFlow, crashes
the process: measured with torch 2.14 and TF 2.21), sets its own threads, and
needs neither Keras nor keras_mtl. It serves requests, one JSON object a line
on stdin, one JSON answer a line on stdout, so that `speed` can interleave it
cell by cell with keras_mtl's side:
- `{"threads": N}`: sets PyTorch's threads; answers the versions and threads;
- `{"prepare": CELL, "spec": [CLASS, ARGUMENTS], "num_classes": C}`: builds
  the cell's network and step, runs 3 untimed steps; answers `{"first": s}`,
  the first step's seconds;
- `{"sample": CELL, "steps": N}`: answers `{"step": s}`, the seconds per step
  of N steps.
A cell is `[model, mode, K, method]`; the npz holds the batch of each
(model, K) as arrays `x_{model}_{K}` and `labels_{model}_{K}` (the batches
keras_mtl trains on; images channels last); `spec` is the method's TorchJD
class and arguments (`speed.TORCHJD_METHODS`).

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
    mtl_backward(
        net.losses(representation, labels), features=representation, tasks_params=heads, shared_params=[representation]
    )
    jac_to_grad([representation], aggregator)
    features.backward(representation.grad)  # one backward pass through the trunk
    optimizer.step()


def _tensors(x, labels, device):
    """A numpy batch as tensors on `device`, images moved to channels first."""
    inputs = torch.from_numpy(x)
    if inputs.ndim == 4:
        inputs = inputs.permute(0, 3, 1, 2).contiguous()
    return inputs.to(device), torch.from_numpy(labels).long().to(device)


class Timer:
    """One cell's network and step, on its batch: timed by `sample` (the first step by `__init__`)."""

    def __init__(self, spec, kind, x, labels, num_classes, representation=False):
        torch.manual_seed(0)
        self.device = _device()
        net = MultiTaskNet(kind, x.shape[1:], labels.shape[1], num_classes).to(self.device)
        self.step = make_step(make_method(spec, labels.shape[1]), net, representation)
        self.inputs, self.targets = _tensors(x, labels, self.device)
        self.first = self.sample(1)
        for _ in range(2):
            self.step(self.inputs, self.targets)

    def sample(self, steps):
        """Seconds per step over `steps` steps."""
        if self.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step(self.inputs, self.targets)
        if self.device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: wait for the last step
        return (time.perf_counter() - start) / steps


def serve(batches, requests, replies):
    """Answers each request line of `requests` on `replies` (see the module docstring)."""
    timers = {}
    for line in requests:
        request = json.loads(line)
        if "threads" in request:
            torch.set_num_threads(request["threads"])
            answer = {"versions": versions(), "threads": torch.get_num_threads()}
        elif "prepare" in request:
            kind, mode, num_tasks, _ = cell = tuple(request["prepare"])
            x, labels = batches[f"x_{kind}_{num_tasks}"], batches[f"labels_{kind}_{num_tasks}"]
            timers[cell] = Timer(
                request["spec"], kind, x, labels, request["num_classes"], representation=mode == "representation"
            )
            answer = {"first": timers[cell].first}
        else:
            cell = tuple(request["sample"])
            answer = {"step": timers[cell].sample(request["steps"])}
            print(f"{' '.join(map(str, cell))}: {1000 * answer['step']:.2f} ms", file=sys.stderr, flush=True)
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


if __name__ == "__main__":
    with np.load(sys.argv[1]) as request:
        serve({name: request[name] for name in request.files}, sys.stdin, sys.stdout)
