"""Pruning and knowledge distillation for models that come from PyTorch.

Needs the ``train`` extra (``pip install 'fogline[train]'``). Each technique
is a :class:`VariantPlan` whose builder trains in PyTorch and exports ONNX,
so its result is measured and reported exactly like every other variant.

* magnitude pruning: the smallest weights of every convolution and linear
  layer (globally, by absolute value) are set to zero with
  ``torch.nn.utils.prune``; the file keeps its size, the zeros compress.
* structured pruning: whole output channels are removed with Torch-Pruning,
  which follows the dependency graph, so the network really gets smaller.
* distillation: a smaller student learns from the teacher's softened outputs
  (and from the labels when the data has them).

Pruned models are fine-tuned the same way, with the unpruned model as
teacher, so no labels are needed. Training runs on the CPU in the calling
thread.
"""

from __future__ import annotations

import copy
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fogline.data import Dataset
from fogline.errors import ConfigError, DataError
from fogline.model import Signature, require, torch_to_onnx
from fogline.optimize._spec import import_spec
from fogline.optimize._variants import BuildContext, VariantPlan

PRUNE_METHODS = ("magnitude", "structured")


@dataclass(frozen=True)
class FitOptions:
    """How to fine-tune or distill: epochs, learning rate, distillation softness."""

    epochs: int = 3
    learning_rate: float = 1e-3
    temperature: float = 4.0
    #: Weight of the teacher's soft targets; the labels get the rest when present.
    alpha: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be zero or more, got {self.epochs}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")


def load_torch_factory(spec: str) -> Any:
    """Call ``module:function`` and return the ``torch.nn.Module`` it builds."""
    require("torch", "train")
    import torch

    factory = import_spec(spec, what="a model factory")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"{spec}: returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def export(model: Any, signature: Signature, data: Dataset, path: Path) -> Path:
    """Export ``model`` with the input and output names of ``signature``."""
    import torch

    sample = tuple(torch.from_numpy(data.batches[0][n][:2]) for n in signature.input_names)
    return torch_to_onnx(
        model,
        sample if len(sample) > 1 else sample[0],
        path,
        input_names=signature.input_names,
        output_names=signature.output_names,
    )


def fit(
    student: Any,
    data: Dataset,
    signature: Signature,
    options: FitOptions,
    teacher: Any | None = None,
) -> None:
    """Train ``student`` on ``data``: soft targets from ``teacher``, hard ones from labels."""
    import torch
    from torch.nn import functional

    if teacher is None and data.labels is None:
        raise DataError(f"{data.source}: training without a teacher needs labels")
    torch.manual_seed(options.seed)
    names = signature.input_names
    inputs = [torch.from_numpy(np.concatenate([b[n] for b in data.batches])) for n in names]
    labels = None if data.labels is None else torch.from_numpy(data.labels.astype(np.int64))
    batch = max(len(next(iter(data.batches[0].values()))), 1)
    optimizer = torch.optim.Adam(student.parameters(), lr=options.learning_rate)
    if teacher is not None:
        teacher.eval()
    temperature = options.temperature
    for _ in range(options.epochs):
        student.train()
        for idx in torch.randperm(len(inputs[0])).split(batch):  # type: ignore[no-untyped-call]
            xs = [x[idx] for x in inputs]
            logits = _first(student(*xs))
            loss = torch.zeros(())
            if teacher is not None:
                with torch.no_grad():
                    target = _first(teacher(*xs))
                soft = (
                    functional.kl_div(
                        functional.log_softmax(logits / temperature, dim=-1),
                        functional.softmax(target / temperature, dim=-1),
                        reduction="batchmean",
                    )
                    * temperature**2
                )
                weight = options.alpha if labels is not None else 1.0
                loss = loss + weight * soft
            if labels is not None:
                hard_weight = 1.0 - options.alpha if teacher is not None else 1.0
                loss = loss + hard_weight * functional.cross_entropy(logits, labels[idx])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    student.eval()


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple | list) else output


def _prunable(model: Any) -> list[Any]:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]


def prune_magnitude(model: Any, amount: float) -> Any:
    """Zero the ``amount`` share of smallest weights across all conv and linear layers."""
    from torch.nn.utils import prune

    params = [(m, "weight") for m in _prunable(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return model


def make_permanent(model: Any) -> Any:
    """Fold the pruning masks into the weights (after fine-tuning kept them at zero)."""
    from torch.nn.utils import prune

    for module in _prunable(model):
        if prune.is_pruned(module):
            prune.remove(module, "weight")  # type: ignore[no-untyped-call]
    return model


def prune_structured(model: Any, amount: float, example: tuple[Any, ...]) -> Any:
    """Remove the ``amount`` share of output channels, least L1 norm first (Torch-Pruning).

    The last linear layer keeps all its outputs: they are the model's classes.
    """
    require("torch_pruning", "train")
    import torch
    import torch_pruning as tp

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(
        model,
        example[0] if len(example) == 1 else example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=last,
    )
    pruner.step()
    return model


def sparsity(model: Any) -> float:
    """Share of zero weights in conv and linear layers."""
    total = zeros = 0
    for module in _prunable(model):
        weight = module.weight.detach()
        total += weight.numel()
        zeros += int((weight == 0).sum())
    return zeros / total if total else 0.0


def prune_plan(
    model: Any,
    method: str,
    amount: float,
    data: Dataset,
    signature: Signature,
    fit_options: FitOptions,
) -> VariantPlan:
    """A variant that prunes a copy of ``model``, fine-tunes it and exports it."""
    if method not in PRUNE_METHODS:
        raise ConfigError(f"unknown pruning method {method!r}; use {', '.join(PRUNE_METHODS)}")
    if not 0.0 < amount < 1.0:
        raise ConfigError(f"pruning amount must be between 0 and 1, got {amount}")

    built: list[Path] = []  # training is slow: a second build copies the first

    def build(ctx: BuildContext, out: Path) -> Path:
        import torch

        if built and built[0].is_file():
            shutil.copyfile(built[0], out)
            return out
        pruned = copy.deepcopy(model)
        if method == "magnitude":
            prune_magnitude(pruned, amount)
        else:
            example = tuple(torch.from_numpy(data.batches[0][n][:2]) for n in signature.input_names)
            prune_structured(pruned, amount, example)
        fit(pruned, data, signature, fit_options, teacher=model)
        make_permanent(pruned)
        export(pruned, signature, data, out)
        packed = len(zlib.compress(out.read_bytes(), 6))
        ctx.notes[out.name] = (
            f"{100 * sparsity(pruned):.0f}% zero weights, {packed / 1024:,.0f} KiB compressed"
        )
        built.append(out)
        return out

    label = f"{round(amount * 100)}"
    what = "smallest weights zeroed" if method == "magnitude" else "output channels removed"
    return VariantPlan(
        f"torch-prune-{method}-{label}",
        "onnxruntime",
        "fp32",
        build,
        f"{label}% {what}, fine-tuned {fit_options.epochs} epoch(s) from the unpruned model",
    )


def distill_plan(
    teacher: Any,
    student: Any,
    data: Dataset,
    signature: Signature,
    fit_options: FitOptions,
    name: str = "torch-distilled-student",
) -> VariantPlan:
    """A variant that trains ``student`` from ``teacher`` and exports it."""

    def build(ctx: BuildContext, out: Path) -> Path:
        fit(student, data, signature, fit_options, teacher=teacher)
        return export(student, signature, data, out)

    params = sum(p.numel() for p in student.parameters())
    teacher_params = sum(p.numel() for p in teacher.parameters())
    return VariantPlan(
        name,
        "onnxruntime",
        "fp32",
        build,
        f"student with {params:,} parameters (teacher {teacher_params:,}), "
        f"{fit_options.epochs} epoch(s), T={fit_options.temperature:g}, alpha={fit_options.alpha:g}",
    )


def parse_prune(spec: str) -> list[tuple[str, float]]:
    """``"magnitude:0.5,structured:0.3"`` → ``[("magnitude", 0.5), ("structured", 0.3)]``."""
    plans: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        method, _, amount = part.partition(":")
        try:
            value = float(amount)
        except ValueError:
            raise ConfigError(
                f"--prune: {part!r} is not METHOD:AMOUNT (e.g. structured:0.3)"
            ) from None
        if method not in PRUNE_METHODS:
            raise ConfigError(f"--prune: unknown method {method!r}; use {', '.join(PRUNE_METHODS)}")
        if not 0.0 < value < 1.0:
            raise ConfigError(f"--prune: amount {value:g} of {method} must be between 0 and 1")
        plans.append((method, value))
    return plans
