"""Models stage: backbones, heads, losses, weights I/O and partial fine-tuning.

Build a model by name::

    from mammocad.models import create_model
    net = create_model("icnt", num_classes=3, in_chans=1, pretrained=False)
    logits, penultimate = net.forward_with_features(batch)  # batch: float [0, 1], (B, 1, H, W)

Registered names: ``list_models()`` (any timm model name works too); heads: ``list_heads()``.
This stage imports nothing from training, evaluation, explain or serve.
"""

from mammocad.models import backbones as _backbones  # noqa: F401  (registers the timm backbones)
from mammocad.models import baseline as _baseline  # noqa: F401  (registers the baseline CNNs)
from mammocad.models import lesion_aware as _lesion_aware  # noqa: F401  (registers lesion_aware)
from mammocad.models.freeze import (
    count_trainable,
    freeze_all_but_last,
    freeze_all_but_stages,
    parameterised_layers,
    set_frozen_bn_eval,
    unfreeze_all,
)
from mammocad.models.heads import GAGM, SEVector, build_head, list_heads
from mammocad.models.lesion_aware import LesionAwareNet, is_lesion_aware
from mammocad.models.losses import ClassificationLoss, balanced_class_weights, feature_smoothing_loss
from mammocad.models.net import MammoNet
from mammocad.models.pretrained import has_offline_weights, offline_imagenet_model, offline_pretrained_state_dict
from mammocad.models.registry import (
    create_model,
    default_head,
    is_timm_model,
    list_models,
    model_input_size,
    register_model,
)
from mammocad.models.weights import (
    LoadResult,
    load_net_or_backbone_weights,
    load_weights,
    read_state_dict,
    read_weights_config,
    save_weights,
)

__all__ = [
    "GAGM",
    "ClassificationLoss",
    "LesionAwareNet",
    "LoadResult",
    "MammoNet",
    "SEVector",
    "balanced_class_weights",
    "build_head",
    "count_trainable",
    "create_model",
    "default_head",
    "feature_smoothing_loss",
    "freeze_all_but_last",
    "freeze_all_but_stages",
    "has_offline_weights",
    "is_lesion_aware",
    "is_timm_model",
    "list_heads",
    "list_models",
    "load_net_or_backbone_weights",
    "load_weights",
    "model_input_size",
    "offline_imagenet_model",
    "offline_pretrained_state_dict",
    "parameterised_layers",
    "read_state_dict",
    "read_weights_config",
    "register_model",
    "save_weights",
    "set_frozen_bn_eval",
    "unfreeze_all",
]
