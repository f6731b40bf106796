"""Activation maps of named layers (Li & Zwiggelaar (2024)): ``F = (1/C) Σ_c |A_c|²`` per spatial position.

:class:`LayerRecorder` captures the outputs of named submodules during a forward pass (forward
hooks, removed on exit), so knowledge transfer, the explanation stage and the report figures read
the same tensors without a second model definition. Layer names are ``model.get_submodule`` names;
for a :class:`~mammocad.models.net.MammoNet` the layer groups are ``model.stage_names()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from mammocad.errors import ConfigError
from mammocad.parse import echo, parse_int


def activation_map(activations: torch.Tensor) -> torch.Tensor:
    """``F = (1/C) Σ_c A_c²`` for activations (B, C, H, W) -> (B, H, W) (float32).

    A (B, C) or (C, H, W) input is refused: the map needs channels and a spatial grid.
    """
    if activations.ndim != 4:
        raise ValueError(f"activation maps need (B, C, H, W) activations, got shape {tuple(activations.shape)}")
    return activations.float().pow(2).mean(dim=1)


def layer_groups(model: nn.Module) -> list[str]:
    """The model's layer groups in order (``model.stage_names()``), else its parameterised children."""
    names = getattr(model, "stage_names", None)
    if callable(names):
        return list(names())
    return [name for name, child in model.named_children() if next(child.parameters(), None) is not None]


def resolve_layers(model: nn.Module, layers: Sequence[str] | None, default: str = "last") -> list[str]:
    """Full submodule names for ``layers`` (None: the last layer group, or all of them with ``default="all"``).

    A name may drop the ``backbone.`` prefix (``features.denseblock4``) or be a negative index into
    the layer groups (``-1``: the last). Raises ConfigError naming the candidates for an unknown name.
    """
    groups = layer_groups(model)
    if not groups:
        raise ConfigError(f"{type(model).__name__} exposes no layer groups; name the layers explicitly")
    if layers is None:
        return list(groups) if default == "all" else [groups[-1]]
    modules = dict(model.named_modules())
    resolved: list[str] = []
    for layer in layers:
        text = str(layer).strip()
        index = parse_int(text)  # ASCII digits only: "²".isdigit() is True but int("²") raises
        if index is not None and -len(groups) <= index < len(groups):
            resolved.append(groups[index])
            continue
        for candidate in (text, f"backbone.{text}"):
            if candidate and candidate in modules:
                resolved.append(candidate)
                break
        else:
            raise ConfigError(
                f"no layer {echo(text)} in {getattr(model, 'name', type(model).__name__)}; "
                f"layer groups: {', '.join(groups)} (or any submodule name, or an index such as -1)"
            )
    return resolved


class LayerRecorder:
    """Records the output tensor of each named layer during the forward passes inside ``with``.

    ``outputs[name]`` is the layer's latest output (with its autograd graph, unless the forward
    ran without gradients). Layers that return a tuple keep their first element.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerRecorder:
        for name in self.layers:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            self.outputs[name] = output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[assignment]

        return record

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def recording(model: nn.Module, layers: Sequence[str]) -> Iterator[LayerRecorder]:
    """``with recording(model, ["backbone.stages.3"]) as rec: model(x)`` then ``rec.outputs``."""
    with LayerRecorder(model, layers) as recorder:
        yield recorder


def activation_maps(
    model: nn.Module, batch: torch.Tensor, layers: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Activation maps (B, h, w) of ``layers`` (default: every layer group) for a [0, 1] batch.

    Runs the model's feature extractor (``forward_features`` when it has one) without gradients.
    """
    names = resolve_layers(model, layers, default="all")
    forward = getattr(model, "forward_features", model)
    with torch.no_grad(), recording(model, names) as recorder:
        forward(batch)
    for name in names:
        output = recorder.outputs.get(name)
        if not (isinstance(output, torch.Tensor) and output.ndim == 4):
            what = f"outputs {tuple(output.shape)}" if isinstance(output, torch.Tensor) else "gives no feature map"
            raise ConfigError(
                f"layer {name!r} {what}, not a spatial feature map (B, C, h, w); "
                f"choose a convolutional layer such as the layer groups {', '.join(layer_groups(model))}"
            )
    return {name: activation_map(recorder.outputs[name]) for name in names}
