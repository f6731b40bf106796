"""One forward for the prediction and the map, autograd only after the target layer, and bf16 close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammocad.devices import cpu_has_fast_bf16
from mammocad.explain.cam import (
    CAM_METHODS,
    _sign_corrected_eigencam,
    cams_and_logits,
    class_activation_maps,
    target_layer,
)
from mammocad.models import create_model

#: Differences allowed between a bf16-autocast Grad-CAM and the float32 one, on maps scaled to [0, 1] per
#: image: (largest, mean) per model. Measured on a 224² phantom over 6 random inits: baseline CNN largest
#: 0.005-0.018; ICNT largest 0.005-0.099 (its 7×7 map is rescaled per image, so bf16 rounding of a flat map
#: is stretched), mean at most 0.021.
BF16_MAP_TOLERANCE = {"baseline_cnn": (0.05, 0.01), "icnt": (0.15, 0.03)}


def whole_graph_cams(model: torch.nn.Module, batch: torch.Tensor, method: str, targets: list[int]) -> np.ndarray:
    """pytorch-grad-cam as the maps were made before: the input requires grad, backward through everything."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = model.get_submodule(target_layer(model))
    cam_class = _sign_corrected_eigencam() if method == "eigencam" else getattr(pytorch_grad_cam, CAM_METHODS[method])
    inputs = batch.detach().float().clone().requires_grad_(True)
    with torch.enable_grad(), cam_class(model=model, target_layers=[module]) as cam:
        maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(t) for t in targets])
    return np.clip(np.nan_to_num(np.asarray(maps, dtype=np.float32)), 0.0, 1.0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("baseline_cnn", num_classes=3, in_chans=1, input_size=64).eval()


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_maps_and_logits_equal_the_whole_graph_ones(model: torch.nn.Module, method: str) -> None:
    batch = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    maps, logits = cams_and_logits(model, batch, method, [1, 2])
    np.testing.assert_allclose(maps, whole_graph_cams(model, batch, method, [1, 2]), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(logits.numpy(), model(batch).numpy(), atol=1e-5)
    assert maps.shape == (2, 64, 64) and logits.dtype == torch.float32


def test_default_target_is_the_predicted_class_of_the_same_pass(model: torch.nn.Module) -> None:
    batch = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    maps, logits = cams_and_logits(model, batch)
    explicit = class_activation_maps(model, batch, targets=logits.argmax(1).tolist())
    np.testing.assert_allclose(maps, explicit, atol=1e-6)


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_leaves_no_gradients_and_the_callers_autograd_mode(model: torch.nn.Module, grad_enabled: bool) -> None:
    batch = torch.rand(1, 1, 64, 64)
    with torch.set_grad_enabled(grad_enabled):
        cams_and_logits(model, batch, "gradcam++")
        assert torch.is_grad_enabled() is grad_enabled
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_a_layer_followed_by_an_in_place_op_still_works() -> None:
    torch.manual_seed(0)
    # The target (the first conv) is followed by an in-place ReLU: the leaf the graph starts from is a clone.
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()
    maps, logits = cams_and_logits(net, torch.rand(1, 1, 16, 16), "gradcam", [1], layer="0")
    assert maps.shape == (1, 16, 16) and np.isfinite(maps).all() and logits.shape == (1, 2)


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bfloat16 (AVX-512 BF16): bf16 is not used")
@pytest.mark.parametrize("name", ["baseline_cnn", "icnt"])
def test_bf16_gradcam_is_close_to_fp32(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name, num_classes=3, in_chans=1, pretrained=False, input_size=96).eval()
    # A smooth phantom-like input: bright disc on dark, so the map has structure to compare.
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    batch = (0.2 + 0.7 * (((yy - 40) ** 2 + (xx - 50) ** 2) < 400).float())[None, None]
    fp32, logits32 = cams_and_logits(net, batch, "gradcam", [2])
    bf16, logits16 = cams_and_logits(net, batch, "gradcam", [2], bf16=True)
    largest, mean = BF16_MAP_TOLERANCE[name]
    assert np.abs(bf16 - fp32).max() <= largest and np.abs(bf16 - fp32).mean() <= mean
    assert (torch.softmax(logits16, 1) - torch.softmax(logits32, 1)).abs().max() < 0.01
    assert logits16.dtype == torch.float32
