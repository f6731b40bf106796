"""Feature Smoothing Loss, class weights and the combined classification loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from mammocad.models.losses import ClassificationLoss, balanced_class_weights, feature_smoothing_loss


def test_feature_smoothing_loss_matches_hand_computation():
    features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 3.0], [1.0, 1.0], [3.0, 5.0], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 5])
    # class 0: mean (2, 1); squared distances 5, 1, 8 -> 14 / 3
    # class 1: mean (2, 3); squared distances 5, 5 -> 10 / 2
    # class 5: a single sample -> 0; classes absent from the batch do not count
    expected = (14 / 3 + 5 + 0) / 3
    assert feature_smoothing_loss(features, labels).item() == pytest.approx(expected)


def test_feature_smoothing_loss_zero_when_each_class_is_constant():
    features = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [-4.0, 0.5, 7.0], [-4.0, 0.5, 7.0]], requires_grad=True)
    loss = feature_smoothing_loss(features, torch.tensor([1, 1, 0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(features.grad) == 0


def test_feature_smoothing_loss_empty_batch_and_gradient():
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = feature_smoothing_loss(empty, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    features = torch.tensor([[0.0], [2.0]], requires_grad=True)
    feature_smoothing_loss(features, torch.tensor([0, 0])).backward()
    # L = ((0-1)^2 + (2-1)^2) / 2; dL/df = (f - mean) (the mean's own gradient sums to zero)
    assert torch.allclose(features.grad, torch.tensor([[-1.0], [1.0]]))
    with pytest.raises(ValueError):
        feature_smoothing_loss(features, torch.tensor([0.0, 1.0]))


def test_balanced_class_weights():
    weights = balanced_class_weights([10, 30, 60])
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    # sum over samples of w_i equals n_samples
    assert float((weights * torch.tensor([10.0, 30.0, 60.0])).sum()) == pytest.approx(100.0)
    # an empty class gets weight 0; the others are balanced among the present classes
    assert torch.allclose(balanced_class_weights([10, 0, 30]), torch.tensor([2.0, 0.0, 40 / 60]))
    with pytest.raises(ValueError):
        balanced_class_weights([0, 0])
    with pytest.raises(ValueError):
        balanced_class_weights([3, -1])


def test_classification_loss_weighted_ce_plus_fs():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 2, 1])
    features = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    weights = torch.tensor([1.0, 2.0, 0.5])
    log_p = torch.log_softmax(logits.detach(), dim=1)
    picked = log_p[torch.arange(3), labels]
    w = weights[labels]
    ce_expected = float(-(w * picked).sum() / w.sum())
    loss = ClassificationLoss(class_weights=weights, lambda_fs=0.1)
    total, parts = loss(logits, labels, features)
    assert parts["ce"].item() == pytest.approx(ce_expected, rel=1e-5)
    assert parts["fs"].item() == 0.0  # one sample per class
    assert total.item() == pytest.approx(ce_expected, rel=1e-5)
    total.backward()
    assert logits.grad is not None

    same_class = torch.tensor([0, 0, 1])
    total, parts = loss(logits.detach(), same_class, features)
    # class 0: mean (0.5, 0.5), squared distances 0.5 + 0.5 over 2 samples = 0.5; class 1: 0
    fs = feature_smoothing_loss(features, same_class).item()
    assert fs == pytest.approx((0.5 + 0.0) / 2)
    assert parts["fs"].item() == pytest.approx(fs)
    assert total.item() == pytest.approx(parts["ce"].item() + 0.1 * fs, rel=1e-5)


def test_classification_loss_options():
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    total, parts = ClassificationLoss(label_smoothing=0.1)(logits, labels)
    assert total.item() == pytest.approx(functional.cross_entropy(logits, labels, label_smoothing=0.1).item())
    assert parts["fs"].item() == 0.0
    # FSL measured but not added when lambda_fs == 0
    total, parts = ClassificationLoss()(logits, labels, torch.tensor([[0.0], [2.0]]))
    assert parts["fs"].item() == 0.0 and total.item() == pytest.approx(parts["ce"].item())
    total, parts = ClassificationLoss()(logits, torch.tensor([1, 1]), torch.tensor([[0.0], [2.0]]))
    assert parts["fs"].item() == pytest.approx(1.0) and total.item() == pytest.approx(parts["ce"].item())
    with pytest.raises(ValueError, match="forward_with_features"):
        ClassificationLoss(lambda_fs=1.0)(logits, labels)
    with pytest.raises(ValueError):
        ClassificationLoss(class_weights=torch.ones(3))(logits, labels)
