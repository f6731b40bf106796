"""Lesion-map head: a patch classifier applied densely, then aggregated into image-level classes.

The head is Shen et al. (2019)'s "patch classifier → whole-image classifier" made fully
convolutional. A 1×1 convolution scores every feature-map cell over the *patch classes*
(``background`` + the lesion classes); averaging those logits over a ``cells × cells`` window
(stride 1) is exactly what the same network does to one patch of ``cells × stride`` pixels, so a
model trained on patches (``patch_logits(fmap).mean((2, 3))``) scores every window of a whole film
in one forward pass. Softmax per window gives the probability heatmap.

Image-level probabilities come from the heatmap by ``aggregation``:

- ``max``: the most suspicious window; ``topk``: the mean of the ``top_k`` most suspicious;
  ``noisy_or``: 1 − Π(1 − p) over the ``top_k`` most suspicious windows (over all windows a large
  film saturates at 1);
- ``learned``: a Linear layer over summary statistics of every class map (max, top-k mean, noisy-OR,
  mean; as log-odds), fitted on whole-film labels (the "second stage" of Shen et al., kept small
  because films are few).

For the fixed rules, with a *negative* task class (``normal``, which is the patch class
``background``): P(normal) = 1 − A, where A is the aggregated lesion probability 1 − p(background),
and A is shared among the lesion classes in proportion to their own aggregated probabilities.
Without a negative class (benign vs malignant on ROIs) the lesion classes' aggregated probabilities
are normalised. Logits are log-probabilities, so softmax returns those probabilities.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Aggregation = Literal["max", "topk", "noisy_or", "learned"]
AGGREGATIONS: tuple[str, ...] = ("max", "topk", "noisy_or", "learned")
#: Summary statistics per patch class, in this order, in ``features()``.
STATISTICS: tuple[str, ...] = ("max", "topk", "noisy_or", "mean")
_EPS = 1e-6


def patch_classes(task_classes: list[str], negative_class: int | None) -> list[str]:
    """The patch classes of a task: ``background`` first, then the task's lesion classes in order.

    ``negative_class`` is the index of the task class that means "no lesion" (``normal``), or None
    when every task class is a lesion class (benign vs malignant).
    """
    return ["background"] + [c for i, c in enumerate(task_classes) if i != negative_class]


class LesionMapHead(nn.Module):
    """Feature map (B, C, h, w) → image logits (B, num_classes) through a dense patch heatmap.

    Args:
        in_channels: backbone channels C.
        num_classes: image-level (task) classes.
        negative_class: index of the task class that is the patch class ``background`` (``normal``),
            or None when every task class is a lesion class.
        aggregation: ``max``, ``topk``, ``noisy_or`` or ``learned`` (see the module doc).
        top_k: windows used by ``topk`` and ``noisy_or``.
        window_cells: feature-map cells per patch side (patch size / backbone stride).
        drop_rate: dropout on the features before the 1×1 patch classifier.
        bilateral: the learned stage also reads the film's statistics minus those of the other
            breast's film (same view): radiologists read asymmetry. Without the other film the
            difference is zero (the film is read alone).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        negative_class: int | None = 0,
        aggregation: Aggregation = "topk",
        top_k: int = 4,
        window_cells: int = 3,
        drop_rate: float = 0.0,
        bilateral: bool = False,
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if negative_class is not None and not 0 <= negative_class < num_classes:
            raise ValueError(f"negative_class {negative_class} is not a class index (num_classes={num_classes})")
        if num_classes - (negative_class is not None) < 1:
            raise ValueError("a lesion-map head needs at least one lesion class")
        self.num_classes = int(num_classes)
        self.negative_class = negative_class
        self.num_patch_classes = self.num_classes + (1 if negative_class is None else 0)
        self.aggregation = aggregation
        self.top_k = max(1, int(top_k))
        self.window_cells = max(1, int(window_cells))
        self.drop = nn.Dropout(drop_rate)
        self.patch_classifier = nn.Conv2d(in_channels, self.num_patch_classes, kernel_size=1)
        self.bilateral = bool(bilateral)
        self.own_feature_count = len(STATISTICS) * self.num_patch_classes
        self.second_stage = nn.Linear(self.own_feature_count * (2 if bilateral else 1), self.num_classes)
        # Small, not zero: a model trained end to end on film labels needs a gradient from the start.
        nn.init.normal_(self.second_stage.weight, std=0.01)
        nn.init.zeros_(self.second_stage.bias)
        # patch class k (k >= 1) -> task class index
        lesion_task = [i for i in range(self.num_classes) if i != negative_class]
        self.register_buffer("lesion_to_task", torch.tensor(lesion_task, dtype=torch.long), persistent=False)

    def feature_layers(self) -> list[str]:
        """Latent stages (the head contract): the per-window patch scores."""
        return ["patch_classifier"]

    # -- dense patch scores -------------------------------------------------------------------
    def cell_logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """Per-cell patch-class logits (B, K, h, w)."""
        return self.patch_classifier(self.drop(fmap))

    def patch_logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """One patch's logits (B, K): the cell logits averaged (what training on patches optimises)."""
        return self.cell_logits(fmap).mean(dim=(2, 3))

    def window_logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w) of the patch-sized window centred on every cell (zero padding ignored)."""
        logits = self.cell_logits(fmap)
        cells = min(self.window_cells, logits.shape[-2], logits.shape[-1])
        if cells <= 1:
            return logits
        # An even window has no centre cell: pad one more on the bottom/right to keep the map's size.
        pad = (cells // 2 - (1 - cells % 2), cells // 2, cells // 2 - (1 - cells % 2), cells // 2)
        padded = F.pad(logits, pad)
        ones = F.pad(torch.ones_like(logits[:, :1]), pad)
        total = F.avg_pool2d(padded, cells, stride=1)
        count = F.avg_pool2d(ones, cells, stride=1).clamp_min(_EPS)
        return total / count

    def heatmap(self, fmap: torch.Tensor) -> torch.Tensor:
        """Patch-class probabilities (B, K, h, w) per window; channel 0 is ``background``."""
        return torch.softmax(self.window_logits(fmap).float(), dim=1)

    # -- aggregation --------------------------------------------------------------------------
    def statistics(self, probs: torch.Tensor) -> torch.Tensor:
        """Summary statistics (B, K, 4) of a probability map (B, K, h, w): max, top-k mean, noisy-OR, mean.

        For ``background`` the statistics describe the lesion map 1 − p(background) instead.
        """
        maps = torch.cat([1 - probs[:, :1], probs[:, 1:]], dim=1).flatten(2).clamp(_EPS, 1 - _EPS)
        k = min(self.top_k, maps.shape[-1])
        top = maps.topk(k, dim=-1).values
        noisy_or = 1 - torch.exp(torch.log1p(-top).sum(dim=-1))
        stats = torch.stack([top[..., 0], top.mean(dim=-1), noisy_or, maps.mean(dim=-1)], dim=-1)
        return stats.clamp(_EPS, 1 - _EPS)

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Penultimate vector (B, 4K, or 8K when bilateral): the statistics of every class map as log-odds."""
        return self.features_from_heatmap(self.heatmap(fmap))

    def own_features(self, probs: torch.Tensor) -> torch.Tensor:
        """One film's statistics as log-odds (B, 4K), from its heatmap."""
        return torch.logit(self.statistics(probs)).flatten(1)

    def combine(self, own: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        """The penultimate vector from a film's :meth:`own_features` and, when bilateral, its other breast's
        (None: unknown, the difference is zero)."""
        if not self.bilateral:
            return own
        difference = own - other if other is not None else torch.zeros_like(own)
        return torch.cat([own, difference], dim=1)

    def features_from_heatmap(self, probs: torch.Tensor, other_probs: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`features` from already computed heatmaps (e.g. averaged over flips), with the other breast's."""
        other = self.own_features(other_probs) if other_probs is not None and self.bilateral else None
        return self.combine(self.own_features(probs), other)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Image logits (B, num_classes) from :meth:`features`."""
        if self.aggregation == "learned":
            return self.second_stage(features)
        own = features[:, : self.own_feature_count]
        stats = torch.sigmoid(own.reshape(features.shape[0], self.num_patch_classes, len(STATISTICS)))
        column = {"max": 0, "topk": 1, "noisy_or": 2}[self.aggregation]
        chosen = stats[..., column]  # (B, K): lesion evidence A, then each lesion class's evidence
        lesion = chosen[:, 1:] / chosen[:, 1:].sum(dim=1, keepdim=True).clamp_min(_EPS)
        probs = torch.zeros(features.shape[0], self.num_classes, dtype=chosen.dtype, device=chosen.device)
        if self.negative_class is None:
            probs[:, self.lesion_to_task] = lesion
        else:
            evidence = chosen[:, :1]
            probs[:, self.lesion_to_task] = evidence * lesion
            probs[:, self.negative_class] = 1 - evidence[:, 0]
        return torch.log(probs.clamp_min(_EPS))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Image logits (B, num_classes) from a (B, C, h, w) feature map."""
        return self.classify(self.features(fmap))
