"""Pretrained weights: the offline EfficientNet-Lite0 copy, and clear errors when the hub is unreachable.

No test here touches the network: the hub probe and timm's loader are monkeypatched.
"""

from __future__ import annotations

import time
import urllib.error

import numpy as np
import pytest
import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file
from skimage import data, transform

import mammocad.models.pretrained as pretrained
from mammocad.errors import ConfigError, MammocadError
from mammocad.models import create_model, offline_imagenet_model, offline_pretrained_state_dict


def imagenet_batch(image: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    resized = transform.resize(image, (224, 224), order=3, anti_aliasing=True).astype(np.float32)  # RGB in [0, 1]
    tensor = torch.from_numpy(resized).permute(2, 0, 1)[None]
    return (tensor - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_offline_weights_classify_imagenet_images():
    model = offline_imagenet_model("efficientnet_lite0")
    cfg = model.pretrained_cfg
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    with torch.no_grad():
        cat = model(imagenet_batch(data.chelsea(), cfg["mean"], cfg["std"])).softmax(1)
        coffee = model(imagenet_batch(data.coffee(), cfg["mean"], cfg["std"])).softmax(1)
    assert cat.argmax().item() == 285  # Egyptian cat
    assert coffee.argmax().item() == 967  # espresso
    assert cat.max().item() > 0.5 and coffee.max().item() > 0.5


def test_offline_state_dict_maps_every_tensor_in_order():
    state = offline_pretrained_state_dict("efficientnet_lite0")
    reference = timm.create_model("tf_efficientnet_lite0", num_classes=1000).state_dict()
    expected = [k for k in reference if not k.endswith("num_batches_tracked")]
    assert list(state) == expected
    assert all(state[k].shape == reference[k].shape for k in expected)
    assert state["classifier.weight"].shape == (1000, 1280)
    state.clear()  # callers get a copy: the cache is unaffected
    assert len(offline_pretrained_state_dict("tf_efficientnet_lite0")) == len(expected)
    with pytest.raises(ConfigError, match="no offline pretrained weights for 'resnet50'"):
        offline_pretrained_state_dict("resnet50")


@pytest.mark.parametrize("in_chans", [1, 3])
def test_offline_backbone_adapts_the_stem(in_chans):
    state = offline_pretrained_state_dict()
    net = create_model("efficientnet_lite0", num_classes=2, in_chans=in_chans, pretrained="offline")
    backbone = net.backbone.state_dict()
    stem = state["conv_stem.weight"]
    expected = stem.sum(dim=1, keepdim=True) if in_chans == 1 else stem
    assert torch.allclose(backbone["conv_stem.weight"], expected)
    assert torch.equal(backbone["blocks.3.1.conv_dw.weight"], state["blocks.3.1.conv_dw.weight"])
    assert torch.equal(backbone["bn2.running_mean"], state["bn2.running_mean"])
    assert net(torch.rand(1, in_chans, 64, 64)).shape == (1, 2)


def hub_unreachable(monkeypatch) -> None:
    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(pretrained, "cached_hub_file", lambda name: None)


def test_unreachable_hub_gives_a_clear_error_quickly(monkeypatch):
    hub_unreachable(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(MammocadError) as info:
        create_model("resnet50", 2, pretrained=True)
    assert time.perf_counter() - start < 20  # no retries against a dead network
    message = str(info.value)
    assert "no network to download pretrained weights for resnet50" in message
    assert "weights=PATH" in message and "efficientnet_lite0" in message


@pytest.mark.parametrize(
    "error",
    [
        LocalEntryNotFoundError("cannot find the requested files in the local cache; check your connection"),
        urllib.error.URLError("[Errno -2] Name or service not known"),
        ConnectionError("connection refused"),
    ],
    ids=["huggingface_hub", "urllib", "socket"],
)
def test_download_failure_is_reported_or_falls_back(monkeypatch, error):
    import timm.models._builder as builder

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(builder, "load_pretrained", fail)
    with pytest.raises(MammocadError, match="no network to download pretrained weights for mobilenetv2") as info:
        create_model("mobilenetv2", 2, pretrained=True)
    assert "weights=PATH" in str(info.value) and type(error).__name__ in str(info.value)
    # efficientnet_lite0 resolves to the offline package instead
    net = create_model("efficientnet_lite0", 2, pretrained=True)
    offline = offline_pretrained_state_dict()
    assert torch.allclose(net.backbone.conv_stem.weight, offline["conv_stem.weight"].sum(dim=1, keepdim=True))


def test_unreachable_hub_uses_the_offline_copy_and_the_local_cache(monkeypatch, tmp_path):
    hub_unreachable(monkeypatch)
    net = create_model("efficientnet_lite0", 2, pretrained=True)
    offline = offline_pretrained_state_dict()
    assert torch.equal(net.backbone.blocks[6][0].conv_pw.weight, offline["blocks.6.0.conv_pw.weight"])
    # weights already in the Hugging Face cache are used without the network
    torch.manual_seed(0)
    imagenet = timm.create_model("mobilenetv2_100", num_classes=1000).state_dict()
    cached = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.items()}, str(cached))
    monkeypatch.setattr(pretrained, "cached_hub_file", lambda name: cached if name == "mobilenetv2_100" else None)
    net = create_model("mobilenetv2", 2, pretrained=True)
    assert torch.allclose(net.backbone.conv_stem.weight, imagenet["conv_stem.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(net.backbone.conv_head.weight, imagenet["conv_head.weight"])


def test_bad_pretrained_values():
    with pytest.raises(ConfigError, match="pretrained must be"):
        create_model("efficientnet_lite0", 2, pretrained="imagenet")
    with pytest.raises(ConfigError, match="no offline pretrained weights"):
        create_model("resnet50", 2, pretrained="offline")
