"""Photometric training-time augmentations for the downstream estimators (issue 11 item 2).

They widen the appearance range a synthetic-trained estimator sees, which is the obvious cheap
competitor to refinement: a fair comparison trains every source with the same augmentation.

`photometric_augment(task, strengths)` returns ``fn(batch, generator) -> batch`` on model-input
tensors (N, 1, H, W) in [-1, 1]. Every random number is drawn from the given torch.Generator and
passed to kornia's *functional* ops, so kornia's own (global-RNG) randomness is never used and the
output is a function of (batch, generator state) only. Each op is drawn per sample: it applies with
its probability `*_p`, at a magnitude drawn uniformly up to its strength; a strength or probability
of 0 disables it, and with everything 0 the function returns the batch unchanged.

DEFAULT_STRENGTHS (values in model-input units, where the full range [-1, 1] spans 2.0):

gaze
  noise_std 0.04, noise_p 0.5     additive Gaussian noise, std ~ U(0, noise_std)
  blur_sigma 1.0, blur_p 0.3      Gaussian blur, sigma ~ U(0.1, blur_sigma) pixels
  gamma 0.4, gamma_p 0.5          gamma = exp(U(-gamma, gamma)) on [0, 1] intensities
  contrast 0.3, contrast_p 0.5    contrast factor ~ U(1 - contrast, 1 + contrast) about the image mean
  equalize_p 0.2                  histogram equalization (the real MPIIGaze images are equalized)
hand
  noise_std 0.01, noise_p 0.5     Gaussian noise on the hand (foreground, < 1.0) only
  holes 0.02, holes_p 0.5         2x2-pixel holes at rate ~ U(0, holes) of the foreground, set to 1.0 (far)
  erode 0.5, erode_p 0.5          foreground pixels beside a depth jump > edge_threshold are set to 1.0
  edge_threshold 0.1              with probability ~ U(0, erode) each (sensor edge drop-out)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

DEFAULT_STRENGTHS: dict[str, dict[str, float]] = {
    "gaze": {
        "noise_std": 0.04,
        "noise_p": 0.5,
        "blur_sigma": 1.0,
        "blur_p": 0.3,
        "gamma": 0.4,
        "gamma_p": 0.5,
        "contrast": 0.3,
        "contrast_p": 0.5,
        "equalize_p": 0.2,
    },
    "hand": {
        "noise_std": 0.01,
        "noise_p": 0.5,
        "holes": 0.02,
        "holes_p": 0.5,
        "erode": 0.5,
        "erode_p": 0.5,
        "edge_threshold": 0.1,
    },
}

_PROBS = ("noise_p", "blur_p", "gamma_p", "contrast_p", "equalize_p", "holes_p", "erode_p", "holes", "erode")

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def resolve_strengths(task: str, strengths: dict | None) -> dict[str, float]:
    """Defaults overridden by `strengths`; unknown keys and out-of-range values are errors."""
    if task not in DEFAULT_STRENGTHS:
        raise ValueError(f"task: expected one of {tuple(DEFAULT_STRENGTHS)}, got {task!r}")
    out = dict(DEFAULT_STRENGTHS[task])
    for k, v in (strengths or {}).items():
        if k not in out:
            raise ValueError(f"strengths: unknown key {k!r} for task {task!r}; expected keys {sorted(out)}")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"strengths[{k!r}]: expected a number, got {v!r}") from None
        if not v >= 0 or (k in _PROBS and v > 1):
            raise ValueError(f"strengths[{k!r}]: expected {'0..1' if k in _PROBS else '>= 0'}, got {v}")
        out[k] = v
    if task == "hand" and out["edge_threshold"] <= 0 and out["erode"] > 0 and out["erode_p"] > 0:
        raise ValueError("strengths['edge_threshold']: expected > 0 when erosion is enabled")
    return out


def _uniform(n, lo, hi, g, like):
    return (torch.rand(n, generator=g, device=g.device).to(like.device) * (hi - lo) + lo).to(like.dtype)


def _gate(n, p, g, like):
    """Per-sample apply mask (N,1,1,1)."""
    return (torch.rand(n, generator=g, device=g.device).to(like.device) < p).view(n, 1, 1, 1)


def _randn_like(x, g):
    return torch.randn(x.shape, generator=g, device=g.device).to(x.device, x.dtype)


def _rand_like(x, g):
    return torch.rand(x.shape, generator=g, device=g.device).to(x.device, x.dtype)


def _gaze(s: dict[str, float]) -> Augment:
    import kornia

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        if s["gamma"] > 0 and s["gamma_p"] > 0:
            on = _gate(n, s["gamma_p"], g, x)
            gamma = torch.exp(_uniform(n, -s["gamma"], s["gamma"], g, x))
            y = kornia.enhance.adjust_gamma((x + 1) / 2, gamma) * 2 - 1
            x = torch.where(on, y, x)
        if s["contrast"] > 0 and s["contrast_p"] > 0:
            on = _gate(n, s["contrast_p"], g, x)
            c = _uniform(n, 1 - s["contrast"], 1 + s["contrast"], g, x).view(n, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = torch.where(on, ((x - mean) * c + mean).clamp(-1, 1), x)
        if s["equalize_p"] > 0:
            on = _gate(n, s["equalize_p"], g, x)
            y = kornia.enhance.equalize(((x + 1) / 2).clamp(0, 1)) * 2 - 1
            x = torch.where(on, y, x)
        if s["blur_sigma"] > 0 and s["blur_p"] > 0:
            on = _gate(n, s["blur_p"], g, x)
            sig = _uniform(n, min(0.1, s["blur_sigma"]), s["blur_sigma"], g, x)
            k = 2 * int(torch.ceil(torch.tensor(3 * s["blur_sigma"]))) + 1
            y = kornia.filters.gaussian_blur2d(x, (k, k), torch.stack([sig, sig], 1))
            x = torch.where(on, y, x)
        if s["noise_std"] > 0 and s["noise_p"] > 0:
            on = _gate(n, s["noise_p"], g, x)
            std = _uniform(n, 0.0, s["noise_std"], g, x).view(n, 1, 1, 1)
            x = torch.where(on, (x + std * _randn_like(x, g)).clamp(-1, 1), x)
        return x

    return fn


def depth_edges(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Foreground pixels (< 1) with a 4-neighbour whose depth differs by more than `threshold`."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    jump = torch.stack(
        [
            (p[..., :-2, 1:-1] - c).abs(),
            (p[..., 2:, 1:-1] - c).abs(),
            (p[..., 1:-1, :-2] - c).abs(),
            (p[..., 1:-1, 2:] - c).abs(),
        ]
    ).amax(0)
    return (jump > threshold) & (x < 1.0)


def _hand(s: dict[str, float]) -> Augment:
    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        far = torch.ones((), dtype=x.dtype, device=x.device)
        if s["erode"] > 0 and s["erode_p"] > 0:
            # Edges come from the clean depth, before noise could create spurious jumps.
            on = _gate(n, s["erode_p"], g, x)
            rate = _uniform(n, 0.0, s["erode"], g, x).view(n, 1, 1, 1)
            hit = depth_edges(x, s["edge_threshold"]) & (_rand_like(x, g) < rate) & on
            x = torch.where(hit, far, x)
        if s["holes"] > 0 and s["holes_p"] > 0:
            on = _gate(n, s["holes_p"], g, x)
            rate = _uniform(n, 0.0, s["holes"], g, x).view(n, 1, 1, 1)
            h, w = x.shape[-2:]
            coarse = _rand_like(x[..., : (h + 1) // 2, : (w + 1) // 2], g) < rate
            hole = F.interpolate(coarse.to(x.dtype), scale_factor=2, mode="nearest")[..., :h, :w] > 0
            x = torch.where(hole & on & (x < 1.0), far, x)
        if s["noise_std"] > 0 and s["noise_p"] > 0:
            on = _gate(n, s["noise_p"], g, x)
            std = _uniform(n, 0.0, s["noise_std"], g, x).view(n, 1, 1, 1)
            fg = x < 1.0
            x = torch.where(on & fg, (x + std * _randn_like(x, g)).clamp(-1, 1), x)
        return x

    return fn


def photometric_augment(task: str, strengths: dict | None = None) -> Augment:
    """-> fn(batch, generator) for `task` with DEFAULT_STRENGTHS[task] overridden by `strengths`.

    batch: (N, 1, H, W) float in [-1, 1] (any device; draws come from the generator's device).
    Use only on training batches; pass all strengths 0 for the identity."""
    s = resolve_strengths(task, strengths)
    inner = _gaze(s) if task == "gaze" else _hand(s)

    def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or not batch.is_floating_point():
            raise ValueError(
                f"batch: expected a float (N, C, H, W) tensor in [-1, 1], got "
                f"{getattr(batch, 'shape', type(batch))} {getattr(batch, 'dtype', '')}"
            )
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
        return inner(batch, generator)

    augment.strengths = s  # type: ignore[attr-defined]
    augment.task = task  # type: ignore[attr-defined]
    return augment
