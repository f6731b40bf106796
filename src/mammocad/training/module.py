"""The Lightning module: loss, optimiser, LR schedule and per-epoch metrics of a classifier."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from mammocad.models.freeze import set_frozen_bn_eval
from mammocad.models.losses import ClassificationLoss
from mammocad.training.config import TrainConfig


class ClassifierModule(L.LightningModule):
    """Wraps a ``MammoNet``: cross-entropy (+ optional FSL), Adam, ReduceLROnPlateau on val loss."""

    def __init__(self, model: torch.nn.Module, train_config: TrainConfig, class_weights: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.config = train_config
        self.loss = ClassificationLoss(class_weights, train_config.label_smoothing, train_config.lambda_fs)
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {"train": [], "val": []}
        self.epoch_metrics: dict[str, float] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.config.lambda_fs > 0:
            logits, features = self.model.forward_with_features(images)
        else:
            logits, features = self.model(images), None
        loss, _parts = self.loss(logits, labels, features)
        probs = torch.softmax(logits.detach().float(), dim=1)
        self._outputs[stage].append((loss.detach() * len(labels), probs, labels))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        self._step(batch, "val")

    def _epoch_end(self, stage: str) -> None:
        outputs = self._outputs[stage]
        if not outputs:
            return
        total = torch.stack([o[0] for o in outputs]).sum()
        probs = torch.cat([o[1] for o in outputs])
        labels = torch.cat([o[2] for o in outputs])
        if self.trainer.world_size > 1:
            # Every rank scores the whole split, so DDP metrics equal single-device ones
            # (DistributedSampler gives each rank the same number of samples).
            total = self.all_gather(total).sum()
            probs = self.all_gather(probs).flatten(0, 1)
            labels = self.all_gather(labels).flatten(0, 1)
        probs_np, labels_np = probs.cpu().numpy(), labels.cpu().numpy()
        preds = probs_np.argmax(1)
        metrics = {
            f"{stage}_loss": float(total) / len(labels_np),
            f"{stage}_acc": float(np.mean(preds == labels_np)),
            f"{stage}_f1_macro": float(f1_score(labels_np, preds, average="macro", zero_division=0)),
            f"{stage}_auc_macro": macro_auc(labels_np, probs_np),
        }
        self.epoch_metrics.update(metrics)
        for key, value in metrics.items():
            # Already global (gathered above), so no sync_dist reduction.
            self.log(key, value, prog_bar=key in ("train_loss", "val_loss", "val_f1_macro", "val_auc_macro"))
        outputs.clear()

    def finish_train_epoch(self) -> None:
        """Compute the epoch's training metrics (idempotent: callbacks may call it before the module hook)."""
        if self._outputs["train"]:
            self._epoch_end("train")
            self.epoch_metrics["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("lr", self.epoch_metrics["lr"])

    def on_train_epoch_start(self) -> None:
        # Frozen BatchNorm layers stay in inference mode, as Keras keeps them (model.train() flips them).
        set_frozen_bn_eval(self.model)

    def on_train_epoch_end(self) -> None:
        self.finish_train_epoch()

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._epoch_end("val")
        else:
            self._outputs["val"].clear()

    def configure_optimizers(self) -> dict[str, object]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.config.lr_factor, patience=self.config.lr_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over classes present (NaN when fewer than two classes occur).

    Binary tasks give the usual AUC of the second (positive) class.
    """
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    scores = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(scores))
