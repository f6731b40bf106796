"""The Lightning module: loss, optimiser, LR schedule and per-epoch metrics of a classifier."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from mammocad.models.activation_maps import recording, resolve_layers
from mammocad.models.freeze import set_frozen_bn_eval
from mammocad.models.losses import ClassificationLoss
from mammocad.models.losses.knowledge_transfer import knowledge_transfer_loss
from mammocad.training.config import TrainConfig


class ClassifierModule(L.LightningModule):
    """Wraps a ``MammoNet``: cross-entropy (+ optional FSL and knowledge transfer), Adam, ReduceLROnPlateau.

    Knowledge transfer (``train.kt_beta > 0``) expects training batches ``(images, labels, masks,
    has_mask)`` and adds ``(β/2) Σ_j d^j`` on the training loss only: validation loss stays the
    plain classification loss, so early stopping compares KT and fine-tuning runs on one scale.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_config: TrainConfig,
        class_weights: torch.Tensor | None,
        patch_mode: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.patch_mode = patch_mode  # lesion_aware's patch stage: batches are patches, logits patch-level
        self.config = train_config
        self.loss = ClassificationLoss(class_weights, train_config.label_smoothing, train_config.lambda_fs)
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {"train": [], "val": []}
        self.epoch_metrics: dict[str, float] = {}
        self.kt_layers = resolve_layers(model, train_config.kt_layers) if train_config.kt_beta > 0 else []
        self._kt_totals: list[torch.Tensor] = []  # per batch: Σ_j d^j summed over masked images
        self._kt_counts: list[torch.Tensor] = []  # per batch: masked images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        transfer = stage == "train" and bool(self.kt_layers)
        with recording(self.model, self.kt_layers if transfer else []) as recorder:
            if self.patch_mode:
                logits, features = self.model.patch_logits(images), None
            elif self.config.lambda_fs > 0:
                logits, features = self.model.forward_with_features(images)
            else:
                logits, features = self.model(images), None
        loss, _parts = self.loss(logits, labels, features)
        if transfer:
            if len(batch) != 4:
                raise ValueError("knowledge transfer needs (images, labels, masks, has_mask) training batches")
            masks, has_mask = batch[2], batch[3]
            kt, distances = knowledge_transfer_loss(
                self._mask_activations(masks), recorder.outputs, self.config.kt_beta, has_mask
            )
            loss = loss + kt
            self._kt_totals.append(torch.stack(list(distances.values())).sum() * has_mask.sum())
            self._kt_counts.append(has_mask.sum().detach())
        probs = torch.softmax(logits.detach().float(), dim=1)
        self._outputs[stage].append((loss.detach() * len(labels), probs, labels))
        return loss

    def _mask_activations(self, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mask branch: the same network in inference mode, without gradient (targets only).

        Inference mode keeps binary masks out of the BatchNorm running statistics.
        """
        if self.config.channels_last:
            masks = masks.contiguous(memory_format=torch.channels_last)
        modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        try:
            with torch.no_grad(), recording(self.model, self.kt_layers) as recorder:
                self.model.forward_features(masks)
        finally:
            for module, mode in modes.items():
                module.training = mode
        return dict(recorder.outputs)

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
            if self._kt_totals:
                total, count = torch.stack(self._kt_totals).sum(), torch.stack(self._kt_counts).sum()
                if self.trainer.world_size > 1:
                    total, count = self.all_gather(total).sum(), self.all_gather(count).sum()
                # mean over masked training images of Σ_j d^j
                self.epoch_metrics["train_kt_distance"] = float(total / count.clamp_min(1))
                self.log("train_kt_distance", self.epoch_metrics["train_kt_distance"])
                self._kt_totals.clear()
                self._kt_counts.clear()
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
        optimizer = make_optimizer(self.model, self.config)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.config.lr_factor, patience=self.config.lr_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters; one fused kernel per step where PyTorch has it for the device.

    Fused Adam updates every tensor in one pass instead of a dozen element-wise ops per tensor (same
    maths); it needs all parameters as floating-point tensors on one device type.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device_types = {p.device.type for p in params}
    fused = (
        len(device_types) == 1
        and next(iter(device_types)) in ("cpu", "cuda")
        and all(p.is_floating_point() for p in params)
    )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


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
