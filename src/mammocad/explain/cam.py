"""Class activation maps with pytorch-grad-cam, on the layer a model's head reads by default.

``class_activation_maps(model, batch, method, targets, layer)`` returns one map per image at the
input's resolution, scaled to [0, 1] per image (pytorch-grad-cam's convention). The default layer
is the backbone's last layer group (``model.stage_names()[-1]``: DenseNet's ``features.norm5``,
ConvNeXt's final norm, the baseline CNN's ``block4``), i.e. the last convolutional stage's output
that the head pools.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from mammocad.errors import ConfigError
from mammocad.explain.overlay import composite, film_overlay, to_float_image
from mammocad.models.activation_maps import layer_groups, resolve_layers

#: CAM-family method name -> pytorch-grad-cam class name.
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
}
#: Every ``mammocad explain --method``; ``lesion`` is a lesion-aware model's own P(lesion) heatmap.
METHODS: tuple[str, ...] = (*CAM_METHODS, "lesion", "activation", "lesion-background")


def check_method(method: str) -> str:
    """The method name, lower-cased; ConfigError listing the valid ones when it does not exist."""
    name = method.strip().lower()
    if name not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    return name


def target_layer(model: nn.Module, layer: str | None = None) -> str:
    """The layer a CAM is computed on: ``layer`` resolved (see ``resolve_layers``) or the last layer group."""
    return resolve_layers(model, None if layer is None else [layer])[0]


def class_activation_maps(
    model: nn.Module,
    batch: torch.Tensor,
    method: str = "gradcam",
    targets: Sequence[int] | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """CAMs (N, H, W) float32 in [0, 1] for a [0, 1] batch (N, C, H, W).

    Args:
        model: a classifier returning logits (a ``MammoNet`` normalises its own input).
        batch: the preprocessed inputs.
        method: one of :data:`CAM_METHODS`.
        targets: class index per image (None: each image's predicted class).
        layer: target layer name (None: the last layer group); unknown names list the candidates.

    The model is put in eval mode (as pytorch-grad-cam does) and left there.
    """
    return cams_and_logits(model, batch, method, targets, layer)[0]


def cams_and_logits(
    model: nn.Module,
    batch: torch.Tensor,
    method: str = "gradcam",
    targets: Sequence[int] | None = None,
    layer: str | None = None,
    *,
    bf16: bool = False,
) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`class_activation_maps` and the logits (N, classes) float32 of the same single forward pass.

    One forward serves both the prediction and the map, and only the part of the network after the
    target layer is differentiated: the layers before it run without autograd, and the target layer's
    output enters the rest of the network as a fresh leaf. The gradient of a class score with respect
    to that output is the same either way (it depends only on the layers after it), so the maps equal
    pytorch-grad-cam's on the whole graph; what goes is the graph bookkeeping of the early layers and
    the backward pass through them and into every weight (ICNT at 224² on 2 cores: 233 ms for the CAM after a 59 ms prediction → 67 ms for both).

    ``bf16``: run the forward under CPU bfloat16 autocast (about 2× faster for ConvNeXt on CPUs with
    AVX-512 BF16; check :func:`mammocad.devices.cpu_has_fast_bf16` first); activations and gradients are taken in float32.
    Maps then differ from float32 ones by 0.02 on average at most, 0.1 at the worst pixel (ICNT, random
    inits; the baseline CNN: 0.02), probabilities by ~1e-3 (tests/explain/test_fast_cam.py).
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    name = check_method(method)
    if name not in CAM_METHODS:
        raise ConfigError(f"{method!r} is not a CAM method; CAM methods: {', '.join(CAM_METHODS)}")
    if batch.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(batch.shape)}")
    num_classes = getattr(model, "num_classes", None)
    if targets is not None:
        if len(targets) != len(batch):
            raise ValueError(f"{len(targets)} target classes for {len(batch)} images")
        bad = [t for t in targets if num_classes is not None and not 0 <= int(t) < num_classes]
        if bad:
            raise ConfigError(f"target class {bad[0]} out of range: the model has {num_classes} classes")
    resolved = target_layer(model, layer)
    module = model.get_submodule(resolved)
    cam_class = _sign_corrected_eigencam() if name == "eigencam" else getattr(pytorch_grad_cam, CAM_METHODS[name])
    wanted = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    inputs = batch.detach().float()
    # Registered before pytorch-grad-cam's own hooks, so theirs see (and take gradients at) the leaf.
    # A CAM needs a spatial feature map (N, C, h, w): refuse e.g. the pooled head with the reason, before
    # pytorch-grad-cam fails on it with "Invalid grads shape".
    check = module.register_forward_hook(_graph_from_here(model, resolved))
    logits: list[torch.Tensor] = []

    def keep_logits(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        logits.append(output.float())  # float32 under bf16 autocast too (pytorch-grad-cam reads them in numpy)
        return logits[-1]

    keep = model.register_forward_hook(keep_logits)
    try:
        # no_grad for the layers before the target; the hook switches autograd on from there (the context
        # restores the caller's mode on exit, the backward inside it included).
        with torch.no_grad(), _autocast(bf16), cam_class(model=model, target_layers=[module]) as cam:
            maps = cam(input_tensor=inputs, targets=wanted)
    finally:
        check.remove()
        keep.remove()
        # The backward left gradients on the head's weights; a CAM has no use for them.
        model.zero_grad(set_to_none=True)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(maps, 0.0, 1.0), logits[-1].detach().float()


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _graph_from_here(model: nn.Module, layer: str) -> Callable[[nn.Module, object, object], torch.Tensor]:
    """A forward hook for the target layer: checks it is spatial, then starts the autograd graph at its
    output (a float32 leaf that requires grad; cloned so that a later in-place op is still allowed)."""
    check = _spatial_output_check(model, layer)

    def start_graph(module: nn.Module, inputs: object, output: object) -> torch.Tensor:
        check(module, inputs, output)  # a 4-D tensor from here on
        torch.set_grad_enabled(True)
        return cast(torch.Tensor, output).detach().float().requires_grad_(True).clone()

    return start_graph


def _spatial_output_check(model: nn.Module, layer: str) -> Callable[[nn.Module, object, object], None]:
    def check(_module: nn.Module, _inputs: object, output: object) -> None:
        if not (isinstance(output, torch.Tensor) and output.ndim == 4):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            groups = ", ".join(layer_groups(model))
            raise ConfigError(
                f"layer {layer!r} outputs {shape}, not a spatial feature map (N, C, h, w); "
                f"a heatmap needs a convolutional layer such as the layer groups {groups} (or an index such as -1)"
            )

    return check


def _sign_corrected_eigencam() -> type:
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    class SignCorrectedEigenCAM(EigenCAM):
        """EigenCAM whose first principal component is oriented (Seg-Eigen-CAM's sign correction):
        plain SVD picks the sign at random, and a flipped map is clipped to zero on the object."""

        def get_cam_image(self, *args: object, **kwargs: object) -> np.ndarray:
            activations = kwargs["activations"] if "activations" in kwargs else args[3]
            return get_2d_projection_with_sign_correction(np.asarray(activations))

    return SignCorrectedEigenCAM


def lesion_heatmaps(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """A lesion-aware model's P(any lesion) maps (N, H, W) at the input's resolution, float32 in [0, 1].

    Unlike a CAM the values are probabilities, not rescaled per image: a film with nothing
    suspicious stays dark. ConfigError for a model without a lesion heatmap.
    """
    import torch.nn.functional as F

    if not callable(getattr(model, "lesion_map", None)):
        raise ConfigError(
            "method 'lesion' needs a lesion-aware run (model.name: lesion_aware); use a CAM method for this model"
        )
    with torch.inference_mode():
        maps = model.lesion_map(batch.float())[:, None]
        maps = F.interpolate(maps, size=tuple(batch.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return np.clip(maps.float().numpy(), 0.0, 1.0)


def localization_maps(
    model: nn.Module, batch: torch.Tensor, classes: Sequence[str], method: str = "gradcam"
) -> np.ndarray:
    """Maps (N, H, W) of where ``model`` sees a lesion, for the pointing game and FROC.

    Lesion-aware models: their P(lesion) heatmap. Others: the CAM ``method`` of the most probable
    class other than ``normal`` (every film gets a lesion map, normal ones too, for the FROC's false
    positives); without a ``normal`` class, of the predicted class.
    """
    if callable(getattr(model, "lesion_map", None)):
        return lesion_heatmaps(model, batch)
    with torch.inference_mode():
        probs = torch.softmax(model(batch.float()), dim=1)
        if "normal" in classes and len(classes) > 1:
            probs[:, list(classes).index("normal")] = -1.0
        targets = probs.argmax(dim=1).tolist()
    return class_activation_maps(model, batch, method, targets)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45, mask: bool = True) -> np.ndarray:
    """An RGB uint8 picture of ``heatmap`` ([0, 1], any size: resized smoothly) over a grey ``image``.

    ``image``: 2-D uint8/uint16 or float in [0, 1]. ``opacity``: the heatmap's weight in [0, 1] at its
    highest values; low values and (``mask``) everything outside the breast stay transparent, in
    :data:`mammocad.explain.overlay.COLORMAP` (see :func:`mammocad.explain.overlay.film_overlay`).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    grey = to_float_image(image)
    return composite(grey, film_overlay(grey, heatmap, mask=mask), opacity)
