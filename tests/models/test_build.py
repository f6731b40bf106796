"""Every registered model builds and trains one step on CPU; the registry, config and normalisation."""

from __future__ import annotations

import pytest
import torch

from mammocad.errors import ConfigError
from mammocad.models import MammoNet, create_model, list_heads, list_models
from mammocad.models.heads import SEVector

REGISTERED = [
    "baseline_cnn",
    "baseline_cnn_flatten",
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "icnt",
    "iiv3",
    "inception_v3",
    "lesion_aware",
    "mobilenetv2",
    "resnet50",
    "resnet50v2",
    "vgg16",
]
DEFAULT_HEAD = {
    "baseline_cnn": "gap",
    "baseline_cnn_flatten": "flatten_dense",
    "icnt": "gagm_se_dense",
    "iiv3": "gagm_se_dense",
    "lesion_aware": "lesion_map",
}
BACKBONE_CHANNELS = {
    "baseline_cnn": 256,
    "convnext_tiny": 768,
    "icnt": 768,
    "inception_v3": 2048,
    "iiv3": 2048,
    "vgg16": 512,
    "resnet50": 2048,
    "resnet50v2": 2048,
    "efficientnet_b0": 1280,
    "mobilenetv2": 1280,
    "densenet121": 1024,
    "efficientnet_lite0": 1280,
    "efficientnet_lite1": 1280,
    "efficientnet_lite2": 1280,
}


def small_side(name: str) -> int:
    return 75 if name in ("inception_v3", "iiv3") else 32  # Inception-V3's smallest input is 75; others stride 32


def test_registered_names():
    assert list_models() == REGISTERED


@pytest.mark.parametrize("name", REGISTERED)
def test_model_builds_and_trains_one_step(name):
    torch.manual_seed(0)
    side = small_side(name)
    extra = {"input_size": side} if name == "baseline_cnn_flatten" else {}
    net = create_model(name, num_classes=3, in_chans=1, **extra)
    assert isinstance(net, MammoNet)
    assert (net.name, net.num_classes, net.in_chans) == (name, 3, 1)
    assert net.head_name == DEFAULT_HEAD.get(name, "gap_dense")
    x = torch.rand(2, 1, side, side)
    fmap = net.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[0] == 2
    if name in BACKBONE_CHANNELS:
        assert fmap.shape[1] == BACKBONE_CHANNELS[name]
    logits, features = net.forward_with_features(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    width = {"gap": fmap.shape[1], "lesion_map": 4 * getattr(net.head, "num_patch_classes", 0)}
    assert features.shape == (2, width.get(net.head_name, 256))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    loss.backward()
    first = next(p for p in net.backbone.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    assert net.head.classify(features).shape == (2, 3)
    # stage names resolve and are disjoint, in order
    stages = net.stage_names()
    assert len(stages) >= 3
    for stage in stages:
        assert net.get_submodule(stage) is not None and stage.startswith("backbone.")
    assert not any(a != b and b.startswith(a + ".") for a in stages for b in stages)
    # eval: forward and forward_with_features agree
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), net.forward_with_features(x)[0])


def test_default_input_sizes_and_config_round_trip():
    assert create_model("iiv3", 2).input_size == 299
    assert create_model("efficientnet_lite0", 2).input_size == 224
    assert create_model("efficientnet_lite1", 2).input_size == 240  # timm's pretrained_cfg for the ImageNet weights
    assert create_model("efficientnet_lite2", 2).input_size == 260
    net = create_model("baseline_cnn_flatten", 4, in_chans=1, input_size=32, drop_rate=0.3)
    config = net.config()
    assert config == {
        "name": "baseline_cnn_flatten",
        "num_classes": 4,
        "in_chans": 1,
        "head": "flatten_dense",
        "drop_rate": 0.3,
        "se_reduction": 16,
        "input_size": 32,
    }
    twin = create_model(**config)
    twin.load_state_dict(net.state_dict())
    x = torch.rand(3, 1, 32, 32)
    net.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))
    with pytest.raises(ValueError, match="built for feature maps"):
        net(torch.rand(1, 1, 64, 64))


def test_baseline_runs_channels_last():
    net = create_model("baseline_cnn", 2).eval()
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        reference = net(x)
        net = net.to(memory_format=torch.channels_last)
        assert torch.allclose(net(x.to(memory_format=torch.channels_last)), reference, atol=1e-5)


def test_icnt_has_the_improved_head():
    net = create_model("icnt", 2, se_reduction=8)
    assert isinstance(net.head.se, SEVector)
    assert net.head.se.channels == 2 * 768 and net.head.se.hidden == 2 * 768 // 8
    assert net.config()["se_reduction"] == 8


def test_normalisation_is_inside_the_model():
    grey = create_model("convnext_tiny", 2)
    assert grey.mean == pytest.approx((0.449,), abs=1e-3) and grey.std == pytest.approx((0.226,), abs=1e-3)
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(grey.normalize(x), (x - grey.mean[0]) / grey.std[0])
    raw = torch.tensor([[[[0, 51], [204, 255]]]], dtype=torch.uint8)
    assert torch.allclose(grey.normalize(raw), grey.normalize(raw.float() / 255))
    rgb = create_model("convnext_tiny", 2, in_chans=3, head="gap")
    assert rgb.mean == pytest.approx((0.485, 0.456, 0.406)) and rgb.std == pytest.approx((0.229, 0.224, 0.225))
    assert rgb(torch.rand(2, 3, 64, 64)).shape == (2, 2)
    assert create_model("efficientnet_lite0", 2).mean == (0.5,)  # tf_efficientnet_lite0's pretrained_cfg
    assert create_model("baseline_cnn", 2, in_chans=2).std == (0.25, 0.25)
    assert "normalize" not in "".join(grey.state_dict())  # mean/std are not weights
    with pytest.raises(ValueError, match=r"expects input \(B, 1, H, W\)"):
        grey(torch.rand(1, 3, 64, 64))


def test_head_override_and_timm_pass_through():
    net = create_model("resnet50", 2, head="gagm_dense")
    assert net.head_name == "gagm_dense" and net.head.dense.hidden.in_features == 4096
    other = create_model("resnet18", 5)  # not registered: any timm name passes through, with the gap head
    assert other.head_name == "gap" and other.head.fc.in_features == 512
    assert other.stage_names()[-1] == "backbone.layer4"
    assert other(torch.rand(2, 1, 64, 64)).shape == (2, 5)
    assert other.config()["name"] == "resnet18"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        create_model("convnext_tinny", 2)
    message = str(info.value)
    for name in REGISTERED:
        assert name in message
    assert "timm" in message and "convnext_tiny" in message
    with pytest.raises(ConfigError) as info:
        create_model("baseline_cnn", 2, head="se")
    for head in list_heads():
        assert head in str(info.value)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("baseline_cnn", 0)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_model("baseline_cnn", 2, pretrained=True)
    with pytest.raises(ConfigError, match="unexpected options"):
        create_model("baseline_cnn", 2, depth=3)
