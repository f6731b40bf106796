"""The lesion-map head and the lesion_aware model: dense patch scores, aggregation, rebuild, TTA, tissue."""

from __future__ import annotations

import pytest
import torch

from mammocad.errors import ConfigError
from mammocad.models import LesionAwareNet, create_model, is_lesion_aware
from mammocad.models.heads.lesion_map import LesionMapHead, patch_classes


def _head(aggregation: str = "topk", negative: int | None = 0, classes: int = 3) -> LesionMapHead:
    torch.manual_seed(0)
    head = LesionMapHead(8, classes, negative, aggregation, top_k=2, window_cells=3).eval()
    torch.nn.init.normal_(head.second_stage.weight)
    return head


def test_patch_classes_put_background_first():
    assert patch_classes(["normal", "benign", "malignant"], 0) == ["background", "benign", "malignant"]
    assert patch_classes(["benign", "malignant"], None) == ["background", "benign", "malignant"]


def test_window_logits_equal_the_patch_logits_of_that_window():
    head = _head()
    fmap = torch.randn(1, 8, 6, 6)
    windows = head.window_logits(fmap)
    # The 3x3 window centred on cell (2, 3) is what the patch stage sees for that 3x3 crop of cells.
    assert torch.allclose(windows[0, :, 2, 3], head.patch_logits(fmap[:, :, 1:4, 2:5])[0], atol=1e-6)
    # At the border only the cells inside the map count (zero padding is not averaged in).
    assert torch.allclose(windows[0, :, 0, 0], head.patch_logits(fmap[:, :, 0:2, 0:2])[0], atol=1e-6)


@pytest.mark.parametrize("aggregation", ["max", "topk", "noisy_or", "learned"])
@pytest.mark.parametrize("negative", [0, None])
def test_aggregations_give_distributions_and_forward_is_classify_of_features(aggregation, negative):
    classes = 3 if negative is not None else 2
    head = _head(aggregation, negative, classes)
    fmap = torch.randn(4, 8, 5, 7)
    logits = head(fmap)
    assert logits.shape == (4, classes)
    probs = torch.softmax(logits, dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(logits, head.classify(head.features(fmap)), atol=1e-6)


def test_fixed_aggregation_follows_the_most_suspicious_window():
    head = _head("max")
    probs = torch.zeros(1, 3, 4, 4)
    probs[:, 0] = 1.0
    probs[0, :, 1, 2] = torch.tensor([0.1, 0.2, 0.7])  # one window: 90% lesion, mostly malignant
    image = torch.softmax(head.classify(head.features_from_heatmap(probs)), dim=1)[0]
    assert image[0] == pytest.approx(0.1, abs=1e-3)  # P(normal) = 1 - max lesion probability
    assert image[2] / image[1] == pytest.approx(3.5, rel=1e-2)  # lesion share split as the class evidence


def test_noisy_or_over_top_k_grows_with_more_suspicious_windows():
    head = _head("noisy_or")
    one, two = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    for probs in (one, two):
        probs[:, 0] = 1.0
    one[0, :, 0, 0] = two[0, :, 0, 0] = two[0, :, 3, 3] = torch.tensor([0.5, 0.5, 0.0])
    normal = [torch.softmax(head.classify(head.features_from_heatmap(p)), 1)[0, 0] for p in (one, two)]
    assert normal[0] == pytest.approx(0.5, abs=1e-3) and normal[1] == pytest.approx(0.25, abs=1e-3)


def test_lesion_aware_model_rebuilds_from_its_config_and_scores_patches_and_films():
    net = create_model("lesion_aware", num_classes=3, backbone="baseline_cnn", patch_size=32, aggregation="topk")
    assert is_lesion_aware(net) and net.head.window_cells == 2  # 32 px / stride 16
    config = net.config()
    assert config["backbone"] == "baseline_cnn" and config["head"] == "lesion_map"
    again = create_model(**config)
    assert isinstance(again, LesionAwareNet) and again.config() == config
    again.load_state_dict(net.state_dict())
    net.eval()
    again.eval()
    film = torch.rand(2, 1, 128, 96)
    assert torch.allclose(net(film), again(film))
    assert net.heatmap(film).shape == (2, 3, 8, 6) and net.lesion_map(film).shape == (2, 8, 6)
    assert net.patch_logits(torch.rand(5, 1, 32, 32)).shape == (5, 3)


def test_flip_tta_makes_the_heatmap_mirror_symmetric_and_air_raises_no_alarm():
    net = create_model("lesion_aware", num_classes=2, backbone="baseline_cnn", patch_size=32, tta_flip=True).eval()
    film = torch.rand(1, 1, 64, 64) * 0.9 + 0.1
    with torch.no_grad():
        heat = net.lesion_map(film)
        mirrored = net.lesion_map(torch.flip(film, dims=(3,)))
        assert torch.allclose(heat, torch.flip(mirrored, dims=(2,)), atol=1e-5)
        air = net.heatmap(torch.zeros(1, 1, 64, 64))  # no breast pixel anywhere
    assert torch.allclose(air[:, 0], torch.ones_like(air[:, 0]))


def test_bad_lesion_aware_options_are_config_errors():
    with pytest.raises(ConfigError, match="aggregation"):
        create_model("lesion_aware", num_classes=3, backbone="baseline_cnn", aggregation="mean")
    with pytest.raises(ConfigError, match="lesion_map head"):
        create_model("lesion_aware", num_classes=3, backbone="baseline_cnn", head="gap")
    with pytest.raises(ConfigError, match="negative_class"):
        create_model("lesion_aware", num_classes=2, backbone="baseline_cnn", negative_class=5)


def test_bilateral_head_reads_the_difference_to_the_other_breast():
    net = create_model(
        "lesion_aware", num_classes=3, backbone="baseline_cnn", patch_size=32, aggregation="learned", bilateral=True
    ).eval()
    assert net.head.second_stage.in_features == 2 * net.head.own_feature_count
    torch.nn.init.normal_(net.head.second_stage.weight)
    film, other = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        alone = net(film)
        with_itself = net(film, contralateral=film)
        with_other = net(film, contralateral=other)
    assert torch.allclose(alone, with_itself, atol=1e-5)  # a symmetric pair reads like the film alone
    assert not torch.allclose(alone, with_other)
    assert create_model(**net.config()).head.bilateral
