"""Partial fine-tuning: exactly the expected parameters stay trainable; frozen BatchNorm in eval mode."""

from __future__ import annotations

import pytest
import torch

from mammocad.errors import ConfigError
from mammocad.models import (
    count_trainable,
    create_model,
    freeze_all_but_last,
    freeze_all_but_stages,
    parameterised_layers,
    set_frozen_bn_eval,
    unfreeze_all,
)


def trainable_names(net) -> set[str]:
    return {name for name, param in net.named_parameters() if param.requires_grad}


def numel(net, prefixes) -> int:
    return sum(p.numel() for n, p in net.named_parameters() if n.startswith(tuple(prefixes)))


def test_freeze_all_but_last_layers_of_the_baseline():
    net = create_model("baseline_cnn", 3)
    layers = [name for name, _ in parameterised_layers(net.backbone)]
    assert layers == [f"block{i}.{kind}" for i in range(1, 5) for kind in ("conv", "bn")]
    count = freeze_all_but_last(net, 3)
    head = {n for n, _ in net.named_parameters() if n.startswith("head.")}
    expected = head | {
        "backbone.block3.bn.weight",
        "backbone.block3.bn.bias",
        "backbone.block4.conv.weight",
        "backbone.block4.bn.weight",
        "backbone.block4.bn.bias",
    }
    assert trainable_names(net) == expected
    assert count == count_trainable(net) == numel(net, sorted(expected))
    freeze_all_but_last(net, 0)
    assert trainable_names(net) == head
    assert freeze_all_but_last(net, 100) == sum(p.numel() for p in net.parameters())
    with pytest.raises(ConfigError):
        freeze_all_but_last(net, -1)


def test_freeze_all_but_last_20_layers_of_convnext():
    net = create_model("convnext_tiny", 3)
    layers = parameterised_layers(net.backbone)
    last = layers[-20:]
    freeze_all_but_last(net, 20)
    expected = {f"backbone.{name}.{p}" for name, module in last for p, _ in module.named_parameters(recurse=False)}
    expected |= {n for n, _ in net.named_parameters() if n.startswith("head.")}
    assert trainable_names(net) == expected
    assert "backbone.head.norm.weight" in expected  # the final norm is the very last layer


def test_freeze_all_but_stages_densenet():
    net = create_model("densenet121", 2)
    stages = net.stage_names()
    assert stages[-2:] == ["backbone.features.denseblock4", "backbone.features.norm5"]
    count = freeze_all_but_stages(net, stages[-2:])
    expected = numel(net, ["backbone.features.denseblock4.", "backbone.features.norm5.", "head."])
    assert count == expected == count_trainable(net)
    assert all(
        n.startswith(("backbone.features.denseblock4.", "backbone.features.norm5.", "head."))
        for n in trainable_names(net)
    )
    with pytest.raises(ConfigError) as info:
        freeze_all_but_stages(net, ["backbone.features.denseblock5"])
    assert "backbone.features.denseblock4" in str(info.value) and "backbone.features.conv0" in str(info.value)
    assert unfreeze_all(net) == sum(p.numel() for p in net.parameters())


def test_frozen_batchnorm_runs_in_inference_mode():
    net = create_model("baseline_cnn", 2)
    freeze_all_but_last(net, 2)  # block4's conv and bn stay trainable
    net.train()
    assert set_frozen_bn_eval(net) == 3
    assert [net.get_submodule(f"backbone.block{i}.bn").training for i in range(1, 5)] == [False, False, False, True]
    frozen_stats = net.backbone.block1.bn.running_mean.clone()
    trained_stats = net.backbone.block4.bn.running_mean.clone()
    net(torch.rand(2, 1, 32, 32))
    assert torch.equal(net.backbone.block1.bn.running_mean, frozen_stats)
    assert not torch.equal(net.backbone.block4.bn.running_mean, trained_stats)
    assert net.head.training  # only BatchNorm layers are switched
