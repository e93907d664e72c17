"""Losses of S+U learning, with the reductions fixed so `lambda` has one meaning.

Label convention (the only place it is defined): the discriminator's logit is "this patch is
REFINED": target 1 for refined images, 0 for real ones (paper sec. 2.1).

Reductions (public ports differ here by up to 10^4, which silently changes lambda):
- adversarial terms are the binary cross-entropy averaged over every patch of every image
  (per-patch mean);
- self-regularization is the L1 distance averaged over every pixel (and channel of psi's output)
  of every image (per-pixel mean).
So the refiner loss  L_R = mean_patches[-log(1 - D(R(x)))] + lambda * mean_pixels|psi(R(x)) - psi(x)|
compares two per-element means, and lambda = 1 weighs "one patch fooled" against "one grey level
on [-1, 1] per pixel" the same way whatever the batch size, image size or patch-map size.
PatchNCE (not in the paper; the alternative of CUT, Park et al. 2020) is a cross-entropy averaged
over sampled patches, images and feature maps, so its weight has the adversarial term's scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from simgan.nets import highpass_residual

REFINED_LABEL = 1.0
REAL_LABEL = 0.0


def local_adversarial_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Cross-entropy of every patch logit against `target`, averaged over patches and batch."""
    logits = logits.float()  # BCE in fp32 even under bf16 autocast: the log terms need the range
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def discriminator_loss(logits_refined: torch.Tensor, logits_real: torch.Tensor) -> torch.Tensor:
    """D's loss: refined patches -> REFINED_LABEL, real patches -> REAL_LABEL, each a per-patch mean,
    averaged so the two halves weigh the same whatever their sizes."""
    return 0.5 * (
        local_adversarial_loss(logits_refined, REFINED_LABEL) + local_adversarial_loss(logits_real, REAL_LABEL)
    )


def refiner_adversarial_loss(logits_refined: torch.Tensor) -> torch.Tensor:
    """-log(1 - D(R(x))) per patch: the refiner wants its output classified as real."""
    return local_adversarial_loss(logits_refined, REAL_LABEL)


def patch_accuracy(logits: torch.Tensor, target: float) -> float:
    """Fraction of patches the discriminator classifies as `target`."""
    predicted_refined = logits.float() > 0
    return float((predicted_refined == bool(target)).float().mean())


# psi: the feature transform of self-regularization. "identity" is the paper's default; the others
# are feature-space choices the paper mentions (mean over colour channels), that tolerate small
# local changes while pinning low-frequency content (average pooling), or the reverse: "detail9"
# pins what is smaller than a 9 x 9 window (a pupil's and an iris's edges, texture) and leaves
# shading broader than it free (a lid's shadow, vignetting), the low-frequency part in which
# refined and real eyes still differ (docs/experiments.md, session 13).
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)


def _avgpool3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _detail9(x: torch.Tensor) -> torch.Tensor:
    return highpass_residual(x, gain=1.0, size=9)


PSI: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": _identity,
    "channel_mean": _channel_mean,
    "avgpool3": _avgpool3,
    "detail9": _detail9,
}


def get_psi(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return PSI[name]
    except KeyError:
        raise ValueError(f"psi: expected one of {sorted(PSI)}, got {name!r}") from None


def self_regularization_loss(refined: torch.Tensor, synthetic: torch.Tensor, psi: str = "identity") -> torch.Tensor:
    """|| psi(R(x)) - psi(x) ||_1 as a per-pixel mean (see the module docstring)."""
    f = get_psi(psi)
    return (f(refined.float()) - f(synthetic.float())).abs().mean()


def refiner_loss(
    logits_refined: torch.Tensor, refined: torch.Tensor, synthetic: torch.Tensor, lam: float, psi: str = "identity"
):
    """Returns (total, adversarial, regularization). `refined` is what the self-regularization
    compares with `synthetic`: the refined batch, or its noise-free part (Refiner.forward's with_mean)."""
    adv = refiner_adversarial_loss(logits_refined)
    reg = self_regularization_loss(refined, synthetic, psi)
    return adv + lam * reg, adv, reg


# CUT's temperature (Park et al. 2020, sec. 3.1: tau = 0.07)
NCE_TEMPERATURE = 0.07


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, tau: float = NCE_TEMPERATURE) -> torch.Tensor:
    """PatchNCE (Park et al. 2020, eq. 2-3): the feature of each sampled patch of the refined image
    (query) must pick out the feature at the same location of its synthetic input (the positive)
    among the other sampled locations of that image (the negatives). query, key: N x P x D unit
    vectors from the same locations; the key carries no gradient, as in CUT. Cross-entropy over the
    P candidates, averaged over patches and images; log(P) when the features say nothing."""
    if query.shape != key.shape or query.ndim != 3:
        raise ValueError(
            f"patch_nce_loss: expected query and key of one N x P x D shape, got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    n, p, _ = query.shape
    logits = (
        torch.bmm(query.float(), key.detach().float().transpose(1, 2)) / tau
    )  # N x P x P, positives on the diagonal
    target = torch.arange(p, device=query.device).repeat(n)
    return F.cross_entropy(logits.reshape(n * p, p), target)
