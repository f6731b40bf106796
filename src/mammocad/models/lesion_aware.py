"""The lesion-aware whole-film model: a patch classifier run densely over the film (``lesion_aware``).

``create_model("lesion_aware", backbone="efficientnet_lite0", num_classes=3, pretrained="offline",
patch_size=96, aggregation="learned")`` builds any registered or timm backbone with a
:class:`~mammocad.models.heads.lesion_map.LesionMapHead`. The same weights score one patch
(``patch_logits``, what the patch stage trains) and a whole film (``heatmap`` → ``forward``, what
``predict``/``evaluate``/``serve`` call). ``tta_flip`` averages the heatmap of the film and of its
mirror image (mapped back), so a lesion is scored the same on either side.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mammocad.errors import ConfigError
from mammocad.models.builders import register_model
from mammocad.models.heads.lesion_map import AGGREGATIONS, LesionMapHead, patch_classes
from mammocad.models.net import MammoNet, measure_feature_map
from mammocad.models.registry import create_model

#: Input level (in [0, 1]) above which a pixel counts as breast; preprocessing fades the rest to 0.
TISSUE_LEVEL = 8 / 255


class LesionAwareNet(MammoNet):
    """A MammoNet whose head is a :class:`LesionMapHead`, with flip TTA and heatmap access.

    ``forward(x)``: image logits (B, num_classes); ``heatmap(x)``: patch-class probabilities
    (B, K, h, w) on the backbone's grid (channel 0 ``background``); ``lesion_map(x)``:
    P(any lesion) = 1 − p(background), (B, h, w); ``patch_logits(x)``: one patch's logits (B, K).
    """

    head: LesionMapHead

    def __init__(self, *, tta_flip: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tta_flip = bool(tta_flip)

    @property
    def patch_class_count(self) -> int:
        return self.head.num_patch_classes

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) over the patch classes for a batch of patches."""
        return self.head.patch_logits(self.forward_features(x))

    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-class probabilities (B, K, h, w) of every patch-sized window (flip-averaged with TTA).

        A lesion needs tissue: the lesion classes of each window are scaled by the share of its
        pixels that are breast (preprocessing leaves the background at 0), the rest goes to
        ``background``. Air and film borders, which no patch covers whole, cannot raise an alarm.
        """
        probs = self.head.heatmap(self.forward_features(x))
        if self.tta_flip:
            mirrored = self.head.heatmap(self.forward_features(torch.flip(x, dims=(3,))))
            probs = 0.5 * (probs + torch.flip(mirrored, dims=(3,)))
        tissue = self._tissue_share(x, probs.shape[-2:])
        lesion = probs[:, 1:] * tissue
        return torch.cat([1 - lesion.sum(dim=1, keepdim=True), lesion], dim=1)

    def _tissue_share(self, x: torch.Tensor, grid_hw: torch.Size) -> torch.Tensor:
        """Share (B, 1, h, w) of breast pixels in the patch-sized window of each heatmap cell."""
        breast = (x[:, :1].float() > TISSUE_LEVEL).float()
        cells = F.adaptive_avg_pool2d(breast, tuple(int(v) for v in grid_hw))
        size = min(self.head.window_cells, int(grid_hw[0]), int(grid_hw[1]))
        if size <= 1:
            return cells
        return F.avg_pool2d(cells, size, stride=1, padding=size // 2, count_include_pad=False)[
            ..., : int(grid_hw[0]), : int(grid_hw[1])
        ]

    def lesion_map(self, x: torch.Tensor) -> torch.Tensor:
        """P(any lesion) per window, (B, h, w)."""
        return 1 - self.heatmap(x)[:, 0]

    def forward(self, x: torch.Tensor, contralateral: torch.Tensor | None = None) -> torch.Tensor:
        """Image logits; ``contralateral``: the other breast's films in the same view (bilateral models)."""
        return self.forward_with_features(x, contralateral)[0]

    def forward_with_features(
        self, x: torch.Tensor, contralateral: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        other = self.heatmap(contralateral) if contralateral is not None and self.head.bilateral else None
        features = self.head.features_from_heatmap(self.heatmap(x), other)
        return self.head.classify(features), features


@register_model("lesion_aware", default_head="lesion_map")
def lesion_aware(
    *,
    num_classes: int,
    in_chans: int = 1,
    pretrained: bool | str = False,
    head: str | None = None,
    drop_rate: float = 0.5,
    se_reduction: int = 16,
    input_size: int | None = None,
    backbone: str = "efficientnet_lite0",
    patch_size: int = 96,
    aggregation: str = "learned",
    top_k: int = 4,
    negative_class: int | None = 0,
    tta_flip: bool = False,
    bilateral: bool = False,
    **kwargs: Any,
) -> LesionAwareNet:
    """Build the lesion-aware model on ``backbone`` (see the module doc).

    ``patch_size``: the training patch side in input pixels (the heatmap window); ``negative_class``:
    the task class that means "no lesion" (``normal``), None when every class is a lesion class;
    ``bilateral``: the learned aggregation also reads the other breast's heatmap statistics.
    """
    if head not in (None, "lesion_map"):
        raise ConfigError(f"lesion_aware always uses the lesion_map head, not {head!r}")
    if backbone == "lesion_aware":
        raise ConfigError("lesion_aware needs a convolutional backbone name, e.g. efficientnet_lite0")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    if patch_size < 16:
        raise ConfigError(f"patch_size must be at least 16 pixels, got {patch_size}")
    inner = create_model(
        backbone, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained, head="gap", **kwargs
    )
    channels, cells, _ = measure_feature_map(inner.backbone, in_chans, patch_size)
    try:
        lesion_head = LesionMapHead(
            channels,
            num_classes,
            negative_class,
            aggregation,  # type: ignore[arg-type]
            top_k,
            cells,
            drop_rate,
            bilateral,
        )
    except ValueError as err:
        raise ConfigError(f"lesion_aware: {err}") from err
    return LesionAwareNet(
        name="lesion_aware",
        backbone=inner.backbone,
        head=lesion_head,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=input_size or inner.input_size,
        mean=inner.mean,
        std=inner.std,
        head_name="lesion_map",
        drop_rate=drop_rate,
        se_reduction=se_reduction,
        stage_names=inner.stage_names(),
        extra_config={
            "backbone": backbone,
            "patch_size": int(patch_size),
            "aggregation": aggregation,
            "top_k": int(top_k),
            "negative_class": negative_class,
            "tta_flip": bool(tta_flip),
            "bilateral": bool(bilateral),
            **kwargs,
        },
        tta_flip=tta_flip,
    )


def is_lesion_aware(model: torch.nn.Module) -> bool:
    """Whether ``model`` scores whole films through a lesion heatmap (has ``heatmap``/``lesion_map``)."""
    return isinstance(model, LesionAwareNet)


__all__ = ["LesionAwareNet", "is_lesion_aware", "lesion_aware", "patch_classes"]
