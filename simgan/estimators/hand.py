"""The stacked-hourglass hand net (HandNet) with its heatmaps, the rotation augmentation, and its
label preparation, loss and output decoding.

Pixel-centre convention: pixel (row i, col j) has its centre at (u=j, v=i). Rescaling between an
S-pixel image and an h-pixel heatmap maps u -> (u + 0.5) * h / S - 0.5 (align_corners=False)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simgan.estimators.base import EstimatorNet, checked_labels


class _Residual(nn.Module):
    """Pre-activation bottleneck (Newell et al. 2016): cheap at 3x3 because it runs at c/2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(1, cout // 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.skip(x) + self.body(x)


class _Hourglass(nn.Module):
    def __init__(self, depth: int, ch: int):
        super().__init__()
        self.up = _Residual(ch, ch)
        self.down = _Residual(ch, ch)
        self.inner = _Hourglass(depth - 1, ch) if depth > 1 else _Residual(ch, ch)
        self.out = _Residual(ch, ch)

    def forward(self, x):
        low = self.out(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, scale_factor=2, mode="nearest")


HEATMAP_LOSSES = ("softmax", "mse")


class HandNet(EstimatorNet):
    """Stacked hourglass for depth hands: `stacks` hourglasses with intermediate supervision.

    forward(x) -> heatmaps (N, stacks, joints, h, h); the last stack is the prediction. The stem
    (a strided conv, then residual + max-pool per further factor 2) brings `in_size` down to
    `heatmap_size` (default in_size/2); `depth` is the number of halvings inside each hourglass.
    The paper used 224 in, 64 heatmaps; the defaults (64 in, 32 heatmaps, 32 channels) are sized
    for CPU runs. `sigma` is the target Gaussian's width in heatmap pixels.

    `heatmap_loss`: "softmax" (default) treats each joint's heatmap as logits over its pixels and
    takes the cross-entropy to the normalized target Gaussian; "mse" is Newell et al.'s pixel MSE.
    At CPU budgets the MSE sits on its all-zero plateau: trained on the embedded real hands for
    300 steps (16x16 heatmaps) it scored PCK@5 28% (the constant predictor's score), softmax 69%."""

    task = "hand"
    float_images_only = True

    def __init__(
        self,
        stacks: int = 2,
        channels: int = 32,
        joints: int = 14,
        in_size: int = 64,
        heatmap_size: int | None = None,
        depth: int = 3,
        sigma: float = 2.0,
        heatmap_loss: str = "softmax",
    ):
        super().__init__()
        if heatmap_loss not in HEATMAP_LOSSES:
            raise ValueError(f"heatmap_loss: expected one of {list(HEATMAP_LOSSES)}, got {heatmap_loss!r}")
        heatmap_size = int(in_size) // 2 if heatmap_size is None else int(heatmap_size)
        for name, v, lo in (
            ("stacks", stacks, 1),
            ("channels", channels, 2),
            ("joints", joints, 1),
            ("in_size", in_size, 4),
            ("depth", depth, 1),
        ):
            if int(v) < lo:
                raise ValueError(f"{name}: expected an integer >= {lo}, got {v}")
        ratio = int(in_size) // heatmap_size if heatmap_size > 0 else 0
        if heatmap_size < 1 or ratio * heatmap_size != int(in_size) or ratio & (ratio - 1):
            raise ValueError(f"heatmap_size: expected in_size / 2^k (in_size={in_size}), got {heatmap_size}")
        if heatmap_size % (2 ** int(depth)):
            raise ValueError(f"depth: heatmap_size {heatmap_size} must be divisible by 2^depth, got depth={depth}")
        if not sigma > 0:
            raise ValueError(f"sigma: expected > 0 (heatmap pixels), got {sigma}")
        self.net_kwargs = dict(
            stacks=int(stacks),
            channels=int(channels),
            joints=int(joints),
            in_size=int(in_size),
            heatmap_size=heatmap_size,
            depth=int(depth),
            sigma=float(sigma),
            heatmap_loss=heatmap_loss,
        )
        self.stacks, self.joints = int(stacks), int(joints)
        self.in_size, self.heatmap_size, self.sigma = int(in_size), heatmap_size, float(sigma)
        self.heatmap_loss = heatmap_loss
        c = int(channels)
        # A strided first conv, as in Newell et al.'s 7x7/2 stem: a residual block at full input
        # resolution cost as much as both hourglasses together (measured: ~2x slower steps).
        stride = 2 if ratio > 1 else 1
        stem: list[nn.Module] = [
            nn.Conv2d(1, c, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
        for _ in range(ratio.bit_length() - 2):
            stem += [_Residual(c, c), nn.MaxPool2d(2)]
        self.stem = nn.Sequential(*stem)
        self.hourglasses = nn.ModuleList(_Hourglass(int(depth), c) for _ in range(stacks))
        # Newell et al. put one more residual before and after each hourglass; at heatmap
        # resolution each costs as much as half an hourglass, so a 1x1 conv takes the place of the
        # one after, and the hourglass's own full-resolution branch serves as the one before
        # (~40% faster steps, and a 1-joint toy still localizes to ~0.2 px).
        self.post = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            for _ in range(stacks)
        )
        self.to_heat = nn.ModuleList(nn.Conv2d(c, joints, 1) for _ in range(stacks))
        # Re-injection of features and predictions into the next stack (intermediate supervision).
        self.back_feat = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(stacks - 1))
        self.back_heat = nn.ModuleList(nn.Conv2d(joints, c, 1) for _ in range(stacks - 1))

    def _run(self, x):
        x = self.stem(x)
        heats, feat = [], None
        for i in range(self.stacks):
            feat = self.post[i](self.hourglasses[i](x))
            heat = self.to_heat[i](feat)
            heats.append(heat)
            if i < self.stacks - 1:
                x = x + self.back_feat[i](feat) + self.back_heat[i](heat)
        return torch.stack(heats, 1), feat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # 4x4 pooling keeps coarse layout, which a k-NN over hand poses needs.
        return F.adaptive_avg_pool2d(self._run(x)[1], 4).flatten(1)

    def prepare_input(self, images, name: str = "images") -> tuple[torch.Tensor, int]:
        """Stored (N, S, S) depth -> the net's in_size x in_size input (resized when S differs)."""
        x, size = super().prepare_input(images, name)
        if x.shape[-2] != size:
            raise ValueError(f"{name}: hand depth must be square (N, S, S), got {tuple(x.shape[1:])}")
        if self.in_size != size:
            x = F.interpolate(
                x, size=(self.in_size, self.in_size), mode="bilinear", align_corners=False, antialias=True
            )
        return x, size

    def prepare_targets(self, labels, n: int, size: int, columns: Sequence[str] | None = None) -> torch.Tensor:
        """Joints (N, J, 3) or (N, J, 2) -> (u, v) in pixels of the net's input."""
        y = checked_labels(labels, n)
        if y.ndim != 3 or y.shape[2] not in (2, 3):
            raise ValueError(f"labels: expected hand joints (N, J, 3) or (N, J, 2), got shape {y.shape}")
        uv = torch.from_numpy(np.ascontiguousarray(y[..., :2]))
        if self.in_size != size:
            uv = rescale_uv(uv, size, self.in_size)
        if uv.shape[1] != self.joints:
            raise ValueError(f"labels: expected {self.joints} joints (net_kwargs joints), got {uv.shape[1]}")
        return uv

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-joint heatmap loss (heatmap_loss), mean over joints and batch, summed over stacks
        (intermediate supervision)."""
        out = out.float()
        target = gaussian_heatmaps(rescale_uv(y, self.in_size, self.heatmap_size), self.heatmap_size, self.sigma)
        if self.heatmap_loss == "softmax":
            target = target.flatten(2)
            target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
            log_p = torch.log_softmax(out.flatten(3), -1)  # N, stacks, J, h*w
            return -(target.unsqueeze(1) * log_p).sum(-1).mean(dim=(0, 2)).sum()
        return (out - target.unsqueeze(1)).pow(2).mean(dim=(0, 2, 3, 4)).sum()

    def geometric_augment(
        self, x: torch.Tensor, y: torch.Tensor, rotation_deg: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image rotated by U(-rotation_deg, rotation_deg) with its joints (rotate_batch)."""
        return rotate_batch(x, y, rotation_deg, generator) if rotation_deg > 0 else (x, y)

    def decode(self, out: torch.Tensor, size: int, method: str = "argmax") -> np.ndarray:
        """(N, J, 2) (u, v) in pixels of the stored image, from the last stack's heatmaps (`method`
        "argmax" with sub-pixel refinement, or "soft")."""
        heat = out[:, -1].float()
        if self.heatmap_loss == "softmax":  # logits -> probabilities: the sub-pixel fit wants log-heat
            heat = torch.softmax(heat.flatten(2), -1).reshape(heat.shape)
        uv = heatmap_to_uv(heat, method)
        return rescale_uv(uv, self.heatmap_size, size).numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Heatmaps and coordinates


def rescale_uv(uv, src: int, dst: int):
    return (uv + 0.5) * (dst / src) - 0.5


def gaussian_heatmaps(uv: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(N, J, 2) heatmap-pixel coordinates -> (N, J, size, size) unnormalized Gaussians (peak 1)."""
    grid = torch.arange(size, dtype=uv.dtype, device=uv.device)
    gx = torch.exp(-((grid - uv[..., 0:1]) ** 2) / (2 * sigma**2))  # N,J,W
    gy = torch.exp(-((grid - uv[..., 1:2]) ** 2) / (2 * sigma**2))  # N,J,H
    heat = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    # Far tails underflow to denormals, which are very slow on CPU and carry no signal.
    return torch.where(heat < 1e-12, torch.zeros_like(heat), heat)


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Differentiable (N, J, h, w) -> (N, J, 2) expected (u, v) under softmax(beta * heatmap)."""
    n, j, h, w = heatmaps.shape
    p = torch.softmax(beta * heatmaps.reshape(n, j, -1).float(), -1).reshape(n, j, h, w)
    u = (p.sum(2) * torch.arange(w, dtype=p.dtype, device=p.device)).sum(-1)
    v = (p.sum(3) * torch.arange(h, dtype=p.dtype, device=p.device)).sum(-1)
    return torch.stack([u, v], -1)


def heatmap_to_uv(heatmaps: torch.Tensor, method: str = "argmax") -> torch.Tensor:
    """(N, J, h, w) heatmaps -> (N, J, 2) (u, v) in heatmap pixels.

    "argmax": the peak refined to sub-pixel by a parabola through the log-heat of the peak and its
    two neighbours per axis (exact for a Gaussian peak). "soft": `soft_argmax`."""
    if method == "soft":
        return soft_argmax(heatmaps)
    if method != "argmax":
        raise ValueError(f"method: expected 'argmax' or 'soft', got {method!r}")
    hm = heatmaps.float()
    n, j, h, w = hm.shape
    idx = hm.reshape(n, j, -1).argmax(-1)
    v, u = idx // w, idx % w
    logh = torch.log(hm.clamp_min(1e-6))
    padded = F.pad(logh, (1, 1, 1, 1), mode="replicate")
    flat = padded.reshape(n, j, -1)
    W = w + 2

    def at(dv, du):
        return flat.gather(-1, ((v + 1 + dv) * W + (u + 1 + du)).unsqueeze(-1)).squeeze(-1)

    c = at(0, 0)

    def offset(lo, hi):
        denom = lo - 2 * c + hi
        off = 0.5 * (lo - hi) / torch.where(denom < -1e-6, denom, torch.full_like(denom, -1e6))
        return off.clamp(-0.5, 0.5)

    # At the border one neighbour is missing and the parabola is undefined: keep the integer peak.
    du = torch.where((u > 0) & (u < w - 1), offset(at(0, -1), at(0, 1)), torch.zeros_like(c))
    dv = torch.where((v > 0) & (v < h - 1), offset(at(-1, 0), at(1, 0)), torch.zeros_like(c))
    return torch.stack([u.float() + du, v.float() + dv], -1)


# ----------------------------------------------------------------------------------------------
# Geometric augmentation


def rotate_batch(
    x: torch.Tensor, uv: torch.Tensor, max_deg: float, generator: torch.Generator, fill: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image by an angle ~ U(-max_deg, max_deg) about its centre, joints with it.

    `x`: (N, C, S, S), `uv`: (N, J, 2) in pixels of x. Uncovered corners are `fill` (1.0 = far)."""
    n, _, h, w = x.shape
    if h != w:
        raise ValueError(f"x: rotation expects square images, got {h}x{w}")
    ang = (torch.rand(n, generator=generator, device=generator.device) * 2 - 1).to(x.device) * math.radians(max_deg)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # affine_grid maps OUTPUT normalized coords to INPUT coords: in = R(-a) out, so content turns by +a.
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin
    theta[:, 1, 0], theta[:, 1, 1] = -sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with 0; shift so the padding value becomes `fill`.
    out = F.grid_sample(x.float() - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    # Joints: normalized p_in = R(-a) p_out  =>  p_out = R(a) p_in.
    c = (h - 1) / 2.0
    pu, pv = uv[..., 0] - c, uv[..., 1] - c
    cu, su = cos.unsqueeze(1), sin.unsqueeze(1)
    new = torch.stack([cu * pu - su * pv + c, su * pu + cu * pv + c], -1)
    return out.to(x.dtype), new
