import math

import pytest
import torch
import torch.nn.functional as F

from simgan.losses import (
    REAL_LABEL,
    REFINED_LABEL,
    discriminator_loss,
    local_adversarial_loss,
    patch_accuracy,
    patch_nce_loss,
    refiner_adversarial_loss,
    refiner_loss,
    self_regularization_loss,
)


def test_label_convention_refined_is_one_real_is_zero():
    assert REFINED_LABEL == 1.0 and REAL_LABEL == 0.0
    confident_refined = torch.full((2, 1, 9, 14), 10.0)
    # D saying "refined" about refined patches costs ~0 for D, and a lot for the refiner
    assert discriminator_loss(confident_refined, -confident_refined) < 1e-3
    assert refiner_adversarial_loss(confident_refined) > 9
    assert refiner_adversarial_loss(-confident_refined) < 1e-3
    assert patch_accuracy(confident_refined, REFINED_LABEL) == 1.0
    assert patch_accuracy(confident_refined, REAL_LABEL) == 0.0


def test_adversarial_loss_is_a_per_patch_mean():
    logits = torch.zeros(2, 1, 9, 14)
    assert local_adversarial_loss(logits, 1.0).item() == pytest.approx(math.log(2))
    # more patches or a bigger batch with the same per-patch values: same loss
    big = torch.zeros(8, 1, 18, 28)
    assert local_adversarial_loss(big, 1.0).item() == pytest.approx(local_adversarial_loss(logits, 1.0).item())
    mixed = torch.randn(4, 1, 9, 14)
    assert local_adversarial_loss(mixed, 0.0).item() == pytest.approx(F.softplus(mixed).mean().item(), rel=1e-5)


def test_self_regularization_is_a_per_pixel_mean():
    syn = torch.zeros(2, 1, 35, 55)
    ref = torch.full_like(syn, 0.5)
    assert self_regularization_loss(ref, syn).item() == pytest.approx(0.5)
    # duplicating the batch or upsampling the image does not change lambda's meaning
    assert self_regularization_loss(torch.cat([ref] * 4), torch.cat([syn] * 4)).item() == pytest.approx(0.5)
    up = F.interpolate(ref, scale_factor=2)
    assert self_regularization_loss(up, F.interpolate(syn, scale_factor=2)).item() == pytest.approx(0.5)


def test_feature_space_psi():
    syn = torch.zeros(1, 3, 8, 8)
    ref = syn.clone()
    ref[:, 0] += 0.3
    ref[:, 1] -= 0.3  # a colour change that keeps the channel mean
    assert self_regularization_loss(ref, syn, "identity").item() == pytest.approx(0.2)
    assert self_regularization_loss(ref, syn, "channel_mean").item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="psi"):
        self_regularization_loss(ref, syn, "vgg")


def test_detail9_psi_frees_broad_shading_and_pins_a_moved_pupil():
    torch.manual_seed(0)
    eye = torch.rand(1, 1, 35, 55) * 0.2 - 0.5
    eye[..., 15:20, 25:30] = -1.0  # a dark 5 px pupil
    shaded = eye + torch.linspace(0, 0.4, 55)  # a smooth shading ramp across the eye
    moved = eye.clone()
    moved[..., 15:20, 25:30] = eye[..., 15:20, 31:36]
    moved[..., 15:20, 31:36] = -1.0  # the pupil moved 6 px
    shading = self_regularization_loss(shaded, eye, "detail9").item()
    assert shading < 0.02 * self_regularization_loss(shaded, eye, "identity").item()
    assert self_regularization_loss(moved, eye, "detail9").item() > 10 * shading


def test_refiner_loss_weights_regularization_by_lambda():
    logits = torch.zeros(1, 1, 9, 14)
    syn = torch.zeros(1, 1, 35, 55)
    ref = torch.full_like(syn, 0.1)
    total, adv, reg = refiner_loss(logits, ref, syn, lam=2.0)
    assert total.item() == pytest.approx(adv.item() + 2.0 * 0.1)
    assert reg.item() == pytest.approx(0.1)


def test_patch_nce_is_near_zero_when_each_patch_matches_only_its_own_location_and_log_p_when_features_say_nothing():
    n, p = 2, 16
    distinct = torch.eye(p).expand(n, p, p)  # every location its own unit vector
    assert float(patch_nce_loss(distinct, distinct)) < 1e-4
    same = F.normalize(torch.ones(n, p, 8), dim=-1)  # every location alike: a uniform guess among P
    assert math.isclose(float(patch_nce_loss(same, same)), math.log(p), rel_tol=1e-5)
    shuffled = distinct[:, torch.roll(torch.arange(p), 1)]  # the refined patch looks like its neighbour
    assert float(patch_nce_loss(shuffled, distinct)) > 10


def test_patch_nce_sends_its_gradient_to_the_query_only_and_refuses_mismatched_shapes():
    q = F.normalize(torch.randn(2, 8, 4), dim=-1).requires_grad_(True)
    k = F.normalize(torch.randn(2, 8, 4), dim=-1).requires_grad_(True)
    patch_nce_loss(q, k).backward()
    assert q.grad is not None and float(q.grad.abs().sum()) > 0 and k.grad is None
    with pytest.raises(ValueError, match=r"patch_nce_loss: expected query and key of one N x P x D shape"):
        patch_nce_loss(q[:, :4], k)
