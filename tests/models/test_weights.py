"""Saving and loading weights: round trips, refusals, and clear errors naming the keys."""

from __future__ import annotations

import pathlib
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from mammocad.errors import ConfigError
from mammocad.models import create_model, load_weights, read_weights_config, save_weights
from mammocad.models.weights import read_state_dict


def make_net(seed: int, num_classes: int = 3):
    torch.manual_seed(seed)
    return create_model("baseline_cnn", num_classes=num_classes).eval()


class Marker:
    """Unpickling this would create a file: proof that weights_only refuses to run pickled code."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def outputs(net, x):
    with torch.no_grad():
        return net(x)


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    net = make_net(0)
    # give BatchNorm non-trivial running statistics
    net.train()
    net(torch.rand(4, 1, 32, 32))
    net.eval()
    path = save_weights(net, tmp_path / "run" / "model.safetensors")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    other = make_net(1)
    x = torch.rand(2, 1, 32, 32)
    assert not torch.allclose(outputs(net, x), outputs(other, x))
    result = load_weights(other, path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(outputs(net, x), outputs(other, x))
    assert read_weights_config(path) == net.config()
    # the stored config rebuilds the architecture; weights=PATH loads into the whole net
    rebuilt = create_model(**read_weights_config(path), weights=path).eval()
    assert torch.equal(outputs(net, x), outputs(rebuilt, x))


def test_pth_state_dict_round_trip_and_wrappers(tmp_path):
    net = make_net(0)
    x = torch.rand(2, 1, 32, 32)
    plain = tmp_path / "plain.pth"
    torch.save(net.state_dict(), plain)
    other = make_net(1)
    load_weights(other, plain)
    assert torch.equal(outputs(net, x), outputs(other, x))
    # a checkpoint dict with a "state_dict" entry and DataParallel "module." prefixes
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, wrapped)
    third = make_net(2)
    load_weights(third, wrapped)
    assert torch.equal(outputs(net, x), outputs(third, x))
    # a Lightning-style "model." prefix on every key
    lightning = tmp_path / "lightning.pt"
    torch.save({"model": {f"model.{k}": v for k, v in net.state_dict().items()}}, lightning)
    fourth = make_net(3)
    load_weights(fourth, lightning)
    assert torch.equal(outputs(net, x), outputs(fourth, x))


def test_mismatched_file_names_the_keys(tmp_path):
    state = make_net(0, num_classes=3).state_dict()
    path = tmp_path / "three_classes.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ConfigError) as info:
        load_weights(make_net(1, num_classes=4), path)
    message = str(info.value)
    assert str(path) in message and "2 shape mismatches" in message
    assert "head.fc.weight: file (3, 256) vs model (4, 256)" in message and "head.fc.bias" in message

    del state["backbone.block4.conv.weight"]
    state["backbone.block5.conv.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(ConfigError) as info:
        load_weights(make_net(1, num_classes=3), tmp_path / "renamed.pth")
    message = str(info.value)
    assert "1 missing keys: backbone.block4.conv.weight" in message
    assert "1 unexpected keys: backbone.block5.conv.weight" in message
    # non-strict: missing/unexpected are reported, not raised
    result = load_weights(make_net(1, num_classes=3), tmp_path / "renamed.pth", strict=False)
    assert result.missing_keys == ["backbone.block4.conv.weight"]
    assert result.unexpected_keys == ["backbone.block5.conv.weight"]


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": Marker(marker)}, path)
    with pytest.raises(ConfigError, match="refused") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found") as info:
        read_state_dict(tmp_path / "absent.safetensors")
    assert "absent.safetensors" in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ConfigError, match="not a readable PyTorch weights file") as info:
        read_state_dict(garbage)
    assert str(garbage) in str(info.value)
    good = save_weights(make_net(0), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ConfigError, match="truncated.safetensors: corrupt or unreadable safetensors"):
        read_state_dict(truncated)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ConfigError, match="expected a state dict"):
        read_state_dict(not_a_dict)


def test_timm_backbone_checkpoint_loads_into_the_backbone(tmp_path):
    torch.manual_seed(0)
    imagenet = timm.create_model("tf_efficientnet_lite0", num_classes=1000, in_chans=3)
    path = tmp_path / "lite0_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    net = create_model("efficientnet_lite0", num_classes=2, in_chans=1, weights=path)
    source = imagenet.state_dict()
    backbone = net.backbone.state_dict()
    # grey input: the RGB stem is summed over its colour channels; the classifier is dropped
    assert torch.allclose(backbone["conv_stem.weight"], source["conv_stem.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(backbone["blocks.6.0.conv_pw.weight"], source["blocks.6.0.conv_pw.weight"])
    assert torch.equal(backbone["bn2.running_var"], source["bn2.running_var"])
    assert "classifier.weight" not in backbone
    # a file that fits neither the net nor the backbone
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match="weights do not fit the backbone of model 'efficientnet_lite0'"):
        create_model("efficientnet_lite0", 2, weights=tmp_path / "partial.pth")


def test_weights_skip_the_download(tmp_path, monkeypatch):
    import mammocad.models.pretrained as pretrained

    def no_download(*args, **kwargs):
        raise AssertionError("weights=PATH must not fetch pretrained weights")

    monkeypatch.setattr(pretrained, "_from_hub", no_download)
    net = create_model("efficientnet_lite0", 2)
    path = save_weights(net, tmp_path / "net.safetensors")
    start = time.perf_counter()
    again = create_model("efficientnet_lite0", 2, pretrained=True, weights=path)
    assert time.perf_counter() - start < 30
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True))
