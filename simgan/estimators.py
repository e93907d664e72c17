"""Downstream estimators that score S+U learning: the gaze CNN, the stacked-hourglass hand net and,
for a task of the user's own images ("generic"), the gaze CNN's backbone regressing every numeric
label column.

The paper's claim is about these networks (a gaze CNN trained on refined images beats one trained
on synthetic ones), so they are trained many times per experiment (sources x sizes x seeds); the
training loop keeps the data in memory as tensors and offers bf16 autocast + channels_last, which
roughly halve CPU step time. Everything random comes from `seed`, so a variant is reproducible.

Public API
- GazeNet, HandNet, RegressionNet: the networks (``forward`` for training, ``features`` for k-NN
  baselines).
- label_matrix: a generic file's label columns -> one (N, K) target matrix and its column names.
- train_estimator, predict, features: work on arrays in the stored data format.
- save_estimator, load_estimator: plain-dict checkpoints, loaded with ``weights_only=True``.
- heatmap_to_uv, gaussian_heatmaps: conversions between joints and heatmaps.
"""

from __future__ import annotations

import math
import pickle
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from simgan.device import autocast as _autocast  # one home for the device switches
from simgan.device import memory_format
from simgan.device import resolve_device as _resolve_device
from simgan.optim import adam
from simgan.io import SimganError, atomic_path

TASKS = ("gaze", "hand", "generic")
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Input conversion


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")


def images_to_input(images: np.ndarray, task: str, name: str = "images") -> torch.Tensor:
    """Stored-format array -> float32 N x C x H x W tensor in [-1, 1].

    Gaze: (N,H,W) uint8 -> x/127.5 - 1 (a float array is taken as already in [-1, 1], so refined
    images kept as floats need no lossy round trip). Hand: (N,S,S) float depth in [-1, 1].
    Generic: like gaze, and colour (N,H,W,C) has its channels moved first."""
    _check_task(task)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    ndims = (3, 4) if task == "generic" else (3,)
    if images.ndim not in ndims or images.shape[0] == 0:
        shape = "(N, H, W) or (N, H, W, C)" if task == "generic" else "(N, H, W)"
        raise ValueError(f"{name}: expected a non-empty {shape} array for task {task!r}, got shape {images.shape}")
    if images.dtype == np.uint8:
        if task == "hand":
            raise ValueError(f"{name}: hand depth must be float in [-1, 1], got uint8")
        t = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
    elif np.issubdtype(images.dtype, np.floating):
        lo, hi = float(images.min()), float(images.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
            raise ValueError(f"{name}: expected float values in [-1, 1], got range [{lo:.4g}, {hi:.4g}]")
        t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    else:
        raise ValueError(f"{name}: expected uint8 (gaze) or float (in [-1, 1]) array, got dtype {images.dtype}")
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------------
# Gaze CNN


class GazeNet(nn.Module):
    """The paper's gaze CNN: conv3x3 32, 32, 64, maxpool3x3/2, conv3x3 80, 192, maxpool2x2/2,
    FC(flattened) -> fc -> 3.

    Convolutions are unpadded: that is what makes the paper's "FC 9600" come out exactly
    (192 x 5 x 10 for a 35 x 55 input). Channel counts scale with `width` (CPU default 0.5).
    The output is an unnormalized 3-D vector trained with L2 against the unit label.

    `outputs` and `pool` exist for RegressionNet: the head's size, and an optional adaptive average
    pool to (h, w) before the FC layer, which keeps the FC small on large images (unpadded convs
    leave about H/4 x W/4 cells: 96 x 150 for a 400 x 600 photo)."""

    task = "gaze"

    def __init__(
        self,
        width: float = 1.0,
        in_channels: int = 1,
        in_hw: Sequence[int] = (35, 55),
        fc: int = 1000,
        batchnorm: bool = False,
        outputs: int = 3,
        pool: Sequence[int] | None = None,
    ):
        super().__init__()
        if not (width > 0):
            raise ValueError(f"width: expected > 0, got {width}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels: expected >= 1, got {in_channels}")
        if int(fc) < 1:
            raise ValueError(f"fc: expected >= 1, got {fc}")
        if int(outputs) < 1:
            raise ValueError(f"outputs: expected >= 1, got {outputs}")
        in_hw = tuple(int(v) for v in in_hw)
        if len(in_hw) != 2 or min(in_hw) < 15:
            raise ValueError(f"in_hw: expected (H, W) with both >= 15 (valid convs + pools), got {in_hw}")
        if pool is not None:
            pool = [int(v) for v in pool]
            if len(pool) != 2 or min(pool) < 1:
                raise ValueError(f"pool: expected null or (h, w) with both >= 1, got {pool}")
        self.net_kwargs = dict(width=float(width), in_channels=int(in_channels), in_hw=list(in_hw),
                               fc=int(fc), batchnorm=bool(batchnorm), outputs=int(outputs), pool=pool)
        ch = [max(1, round(c * width)) for c in (32, 32, 64, 80, 192)]

        def conv(cin, cout):
            layers = [nn.Conv2d(cin, cout, 3, bias=not batchnorm)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            return layers

        self.conv = nn.Sequential(
            *conv(in_channels, ch[0]), *conv(ch[0], ch[1]), *conv(ch[1], ch[2]),
            nn.MaxPool2d(3, 2),
            *conv(ch[2], ch[3]), *conv(ch[3], ch[4]),
            nn.MaxPool2d(2, 2),
            # parameter-free and last, so the conv layers' state_dict keys are the same either way
            *([nn.AdaptiveAvgPool2d(tuple(pool))] if pool is not None else []),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_channels, *in_hw)).numel()
        self.flat_features = flat
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, fc), nn.ReLU(inplace=True))
        self.head = nn.Linear(fc, int(outputs))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class RegressionNet(GazeNet):
    """Task "generic": GazeNet's backbone with `outputs` = the number of label columns (grayscale or
    colour, any H x W >= 15; `in_channels`, `in_hw` and `outputs` default to the training data's).

    It is trained on targets standardized with the training set's mean and std (columns in metres
    and in degrees then weigh alike in the loss); `targets` = {"columns", "mean", "std"} is set by
    train_estimator, saved in the checkpoint's meta, and `predict` maps outputs back to label units."""

    task = "generic"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.targets: dict | None = None


# ----------------------------------------------------------------------------------------------
# Stacked hourglass


class _Residual(nn.Module):
    """Pre-activation bottleneck (Newell et al. 2016): cheap at 3x3 because it runs at c/2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(1, cout // 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1),
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


class HandNet(nn.Module):
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
        for name, v, lo in (("stacks", stacks, 1), ("channels", channels, 2), ("joints", joints, 1),
                            ("in_size", in_size, 4), ("depth", depth, 1)):
            if int(v) < lo:
                raise ValueError(f"{name}: expected an integer >= {lo}, got {v}")
        ratio = int(in_size) // heatmap_size if heatmap_size > 0 else 0
        if heatmap_size < 1 or ratio * heatmap_size != int(in_size) or ratio & (ratio - 1):
            raise ValueError(f"heatmap_size: expected in_size / 2^k (in_size={in_size}), got {heatmap_size}")
        if heatmap_size % (2 ** int(depth)):
            raise ValueError(f"depth: heatmap_size {heatmap_size} must be divisible by 2^depth, got depth={depth}")
        if not sigma > 0:
            raise ValueError(f"sigma: expected > 0 (heatmap pixels), got {sigma}")
        self.net_kwargs = dict(stacks=int(stacks), channels=int(channels), joints=int(joints),
                               in_size=int(in_size), heatmap_size=heatmap_size, depth=int(depth),
                               sigma=float(sigma), heatmap_loss=heatmap_loss)
        self.stacks, self.joints = int(stacks), int(joints)
        self.in_size, self.heatmap_size, self.sigma = int(in_size), heatmap_size, float(sigma)
        self.heatmap_loss = heatmap_loss
        c = int(channels)
        # A strided first conv, as in Newell et al.'s 7x7/2 stem: a residual block at full input
        # resolution cost as much as both hourglasses together (measured: ~2x slower steps).
        stride = 2 if ratio > 1 else 1
        stem: list[nn.Module] = [nn.Conv2d(1, c, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c),
                                 nn.ReLU(inplace=True)]
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


NETS: dict[str, type[nn.Module]] = {"gaze": GazeNet, "hand": HandNet, "generic": RegressionNet}


def build_estimator(task: str, net_kwargs: dict | None = None) -> nn.Module:
    _check_task(task)
    try:
        return NETS[task](**(net_kwargs or {}))
    except TypeError as e:
        raise ValueError(f"net_kwargs: not valid for the {task} network: {e}") from None


# ----------------------------------------------------------------------------------------------
# Heatmaps and coordinates
#
# Pixel-centre convention: pixel (row i, col j) has its centre at (u=j, v=i). Rescaling between
# an S-pixel image and an h-pixel heatmap maps u -> (u + 0.5) * h / S - 0.5 (align_corners=False).


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
# Geometric augmentation (hand)


def rotate_batch(x: torch.Tensor, uv: torch.Tensor, max_deg: float, generator: torch.Generator,
                 fill: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
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


# ----------------------------------------------------------------------------------------------
# Training


def _prepare(task: str, images, labels=None, in_size: int | None = None):
    """Arrays -> (x, y, stored_size): x resized to the net's input for hands, y in training units."""
    x = images_to_input(images, task)
    if labels is None:
        y = None
    else:
        labels = np.asarray(labels, dtype=np.float32)
        if len(labels) != len(x):
            raise ValueError(f"labels: expected {len(x)} rows (one per image), got {len(labels)}")
        if not np.all(np.isfinite(labels)):
            raise ValueError("labels: expected finite values, found NaN/inf")
        if task == "gaze":
            if labels.shape[1:] != (3,):
                raise ValueError(f"labels: expected gaze (N, 3) unit vectors, got shape {labels.shape}")
            y = torch.from_numpy(labels)
        elif task == "generic":
            if labels.ndim != 2 or labels.shape[1] < 1:
                raise ValueError(f"labels: expected generic (N, K) label columns (label_matrix), got shape {labels.shape}")
            y = torch.from_numpy(np.ascontiguousarray(labels))
        else:
            if labels.ndim != 3 or labels.shape[2] not in (2, 3):
                raise ValueError(f"labels: expected hand joints (N, J, 3) or (N, J, 2), got shape {labels.shape}")
            y = torch.from_numpy(np.ascontiguousarray(labels[..., :2]))
    size = x.shape[-1]
    if task == "hand":
        if x.shape[-2] != size:
            raise ValueError(f"images: hand depth must be square (N, S, S), got {tuple(x.shape[1:])}")
        if in_size is not None and in_size != size:
            x = F.interpolate(x, size=(in_size, in_size), mode="bilinear", align_corners=False, antialias=True)
            if y is not None:
                y = rescale_uv(y, size, in_size)
    return x, y, size


def _check_gaze_hw(model: nn.Module, x: torch.Tensor) -> None:
    want = tuple(model.net_kwargs["in_hw"])
    if tuple(x.shape[-2:]) != want:
        raise ValueError(f"images: the {model.task} net expects H x W = {want[0]} x {want[1]}, got {tuple(x.shape[-2:])}")
    if x.shape[1] != model.net_kwargs["in_channels"]:
        raise ValueError(f"images: the {model.task} net expects {model.net_kwargs['in_channels']} channel(s), got {x.shape[1]}")


def label_matrix(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """A generic file's label columns ({name: (N,) or (N, k) array}, e.g. from
    Dataset.label_columns()) -> ((N, K) float64 targets, K column names), columns in sorted name
    order, an (N, k) column giving name_0 .. name_{k-1} (the names `simgan export` uses)."""
    if not columns:
        raise ValueError("labels: expected at least one numeric label column (labels/<name>), got none")
    blocks, names = [], []
    for name in sorted(columns):
        a = np.asarray(columns[name])
        if a.ndim not in (1, 2) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"labels/{name}: expected a numeric (N,) or (N, k) column, got {a.dtype} {a.shape}")
        a = a.reshape(len(a), -1).astype(np.float64)
        blocks.append(a)
        names += [name] if np.ndim(columns[name]) == 1 else [f"{name}_{i}" for i in range(a.shape[1])]
    if len({len(b) for b in blocks}) != 1:
        raise ValueError(f"labels: expected label columns of one length, got {[len(b) for b in blocks]}")
    return np.concatenate(blocks, axis=1), names


def _standardizer(labels: np.ndarray, columns: Sequence[str] | None) -> dict:
    """Training-set mean and std per column; a constant column keeps std 1 (its target is 0)."""
    y = np.asarray(labels, dtype=np.float64)
    std = y.std(axis=0)
    columns = list(columns) if columns is not None else [f"label_{i}" for i in range(y.shape[1])]
    if len(columns) != y.shape[1]:
        raise ValueError(f"columns: expected {y.shape[1]} names (one per label column), got {len(columns)}")
    return {"columns": columns, "mean": y.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


def _generic_shape(images, labels) -> dict:
    """RegressionNet's input and output sizes as the training data has them."""
    shape, lab = np.shape(images), np.shape(labels)
    if len(shape) not in (3, 4) or len(lab) != 2:
        raise ValueError(f"images/labels: expected generic (N, H, W[, C]) images and (N, K) labels, got {shape} and {lab}")
    return {"in_channels": shape[3] if len(shape) == 4 else 1, "in_hw": list(shape[1:3]), "outputs": lab[1]}


def _init_model(task: str, net_kwargs: dict | None, seed: int) -> nn.Module:
    # Weight init uses torch's global RNG; forking it keeps the caller's stream untouched and makes
    # the init a function of `seed` alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_estimator(task, net_kwargs)


def estimator_loss(task: str, model: nn.Module, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gaze: squared L2 per sample, batch mean. Generic: MSE over standardized columns. Hand:
    the per-joint heatmap loss (HandNet.heatmap_loss), mean over joints and batch, summed over
    stacks (intermediate supervision)."""
    out = out.float()
    if task == "gaze":
        return (out - y).pow(2).sum(1).mean()
    if task == "generic":
        return (out - y).pow(2).mean()
    target = gaussian_heatmaps(rescale_uv(y, model.in_size, model.heatmap_size), model.heatmap_size, model.sigma)
    if model.heatmap_loss == "softmax":
        target = target.flatten(2)
        target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
        log_p = torch.log_softmax(out.flatten(3), -1)  # N, stacks, J, h*w
        return -(target.unsqueeze(1) * log_p).sum(-1).mean(dim=(0, 2)).sum()
    return (out - target.unsqueeze(1)).pow(2).mean(dim=(0, 2, 3, 4)).sum()


LR_SCHEDULES = ("constant", "cosine")


def read_training_labels(ds, task: str, rows: slice | None = None, name: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """The labels an estimator of `task` learns, from an open data set (simgan.data.format): gaze
    vectors or joints (columns None), or for "generic" every numeric `labels/<name>` column as one
    (N, K) matrix with its K names. `name` is the user's task name, for the error messages."""
    from simgan.data.format import LABELS_GROUP, label_keys

    _check_task(task)
    if task != "generic":
        key = label_keys(task)[0]
        return ds.read([key], rows)[key], None
    name = name or task
    if ds.task != "generic":
        raise SimganError(f"{ds.path}: attr 'task': expected 'generic' for the user task {name!r} "
                          f"(written by `simgan import folder`), got {ds.task!r}")
    keys = [k for k in ds.keys() if k.startswith(f"{LABELS_GROUP}/")]
    if not keys:
        raise SimganError(f"{ds.path}: key '{LABELS_GROUP}/': expected at least one label column for task {name!r} "
                          f"(import the folder with --labels TABLE), found none")
    cols = ds.read(keys, rows)
    try:
        return label_matrix({k.split("/", 1)[1]: v for k, v in cols.items()})
    except ValueError as e:
        raise SimganError(f"{ds.path}: {e}") from None


def make_optimizer(params, lr: float, steps: int, lr_schedule: str = "constant"):
    """Adam and its per-step lr schedule (None for "constant"): one definition for the one-process
    and the data-parallel loops. "cosine" anneals from lr to 0 over `steps` (no warmup)."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {LR_SCHEDULES}, got {lr_schedule!r}")
    opt = adam(params, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if lr_schedule == "cosine" else None
    return opt, sched


def train_estimator(
    task: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    net_kwargs: dict | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    rotation_deg: float = 20.0,
    device="cpu",
    bf16: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    log_every: int = 0,
    columns: Sequence[str] | None = None,
    lr_schedule: str = "constant",
) -> tuple[nn.Module, list[dict]]:
    """Train a fresh estimator with Adam; returns (model in eval mode on `device`, history).

    images/labels are in the stored format (gaze: (N,35,55) uint8 + (N,3) gaze; hand: (N,S,S)
    depth + (N,14,3) joints; generic: (N,H,W) or (N,H,W,C) uint8 + (N,K) targets from label_matrix,
    whose names `columns` are kept in the model's `targets`). `augment` (e.g. simgan.augment.photometric_augment) runs on each
    batch of model-input tensors; for hands every batch is also rotated by +-`rotation_deg`
    (image and joints together). Same seed -> identical weights on CPU. history holds
    {"step", "loss", "seconds"} every `log_every` steps (loss averaged since the previous entry)
    and always for the last step. `lr_schedule`: "constant" or "cosine" (make_optimizer)."""
    check_train_args(task, steps, batch_size, lr, rotation_deg, log_every)
    dev = _resolve_device(device)
    model, x_all, y_all = prepare_training(task, images, labels, net_kwargs, seed, columns)
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    mf = memory_format(channels_last)
    model = model.to(dev, memory_format=mf).train()
    opt, sched = make_optimizer(model.parameters(), lr, steps, lr_schedule)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    log = LossLog(steps, log_every)
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"train {task}", leave=False)
    for step in it:
        xb, yb = draw_batch(task, x_all, y_all, batch_size, gen, rotation_deg, augment)
        xb = xb.contiguous(memory_format=mf)
        with _autocast(dev, bf16):
            out = model(xb)
        loss = estimator_loss(task, model, out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        log.add(step, float(loss.detach()))
    return model.eval(), log.rows


def check_train_args(task: str, steps, batch_size, lr, rotation_deg, log_every) -> None:
    _check_task(task)
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if not (lr > 0):
        raise ValueError(f"lr: expected > 0, got {lr}")
    if rotation_deg < 0:
        raise ValueError(f"rotation_deg: expected >= 0, got {rotation_deg}")
    if log_every < 0:
        raise ValueError(f"log_every: expected >= 0, got {log_every}")


def prepare_training(task: str, images: np.ndarray, labels: np.ndarray, net_kwargs: dict | None, seed: int,
                     columns: Sequence[str] | None = None) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fresh model initialised from `seed` alone and the whole training set as tensors (generic
    targets standardised), checked against each other: the one-process and the data-parallel
    loops start from exactly this."""
    if task == "generic":
        net_kwargs = {**_generic_shape(images, labels), **(net_kwargs or {})}
    model = _init_model(task, net_kwargs, int(seed))
    in_size = model.in_size if task == "hand" else None
    x_all, y_all, _ = _prepare(task, images, labels, in_size)
    if task == "generic":
        model.targets = _standardizer(labels, columns)
        if y_all.shape[1] != model.net_kwargs["outputs"]:
            raise ValueError(f"labels: expected {model.net_kwargs['outputs']} columns (net_kwargs outputs), got {y_all.shape[1]}")
        mean, std = (torch.tensor(model.targets[k], dtype=torch.float64) for k in ("mean", "std"))
        y_all = ((y_all.double() - mean) / std).float()
    if task in ("gaze", "generic"):
        _check_gaze_hw(model, x_all)
    elif y_all.shape[1] != model.joints:
        raise ValueError(f"labels: expected {model.joints} joints (net_kwargs joints), got {y_all.shape[1]}")
    return model, x_all, y_all


def draw_batch(task: str, x_all: torch.Tensor, y_all: torch.Tensor, batch_size: int, generator: torch.Generator,
               rotation_deg: float, augment) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: rows drawn with replacement, hands rotated with their joints, then the
    photometric augmentation, every draw from `generator`. Both loops draw through here, so a
    data-parallel run sees the batches of the one-process run."""
    n = len(x_all)
    idx = torch.randint(n, (min(batch_size, n),), generator=generator).to(x_all.device)
    xb, yb = x_all[idx], y_all[idx]
    if task == "hand" and rotation_deg > 0:
        xb, yb = rotate_batch(xb, yb, rotation_deg, generator)
    if augment is not None:
        xb = augment(xb, generator)
    return xb, yb


class LossLog:
    """Training history: {"step", "loss", "seconds"} every `log_every` steps (0: never) and at the
    last step, the loss averaged over the steps since the previous row."""

    def __init__(self, steps: int, log_every: int):
        self.steps, self.log_every = steps, log_every
        self.rows: list[dict] = []
        self._t0, self._sum, self._n = time.perf_counter(), 0.0, 0

    def add(self, step: int, loss: float) -> None:
        self._sum += loss
        self._n += 1
        if (self.log_every and (step + 1) % self.log_every == 0) or step == self.steps - 1:
            self.rows.append({"step": step + 1, "loss": self._sum / self._n, "seconds": time.perf_counter() - self._t0})
            self._sum, self._n = 0.0, 0


# ----------------------------------------------------------------------------------------------
# Inference


def _check_model(model: nn.Module, task: str) -> None:
    _check_task(task)
    if not isinstance(model, NETS[task]) or model.task != task:
        raise ValueError(f"model: expected a {NETS[task].__name__} for task {task!r}, got {type(model).__name__}")


def _batched(model, task, images, batch_size, device, bf16, fn):
    _check_model(model, task)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    dev = _resolve_device(device)
    x, _, size = _prepare(task, images, None, model.in_size if task == "hand" else None)
    if task in ("gaze", "generic"):
        _check_gaze_hw(model, x)
    was_training = model.training
    model.to(dev).eval()
    outs = []
    try:
        with torch.no_grad(), _autocast(dev, bf16):
            for s in range(0, len(x), batch_size):
                outs.append(fn(x[s:s + batch_size].to(dev)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs), size


# Inference batch: on one CPU thread 128 ran the gaze CNN 1.5x and the hourglass 1.75x faster than
# 512 (whose activations fall out of cache), with identical outputs.
INFERENCE_BATCH = 128


def predict(model: nn.Module, task: str, images: np.ndarray, batch_size: int = INFERENCE_BATCH, device="cpu",
            bf16: bool = False, method: str = "argmax") -> np.ndarray:
    """Gaze: (N, 3) unit vectors. Hand: (N, J, 2) (u, v) in pixels of the stored image, from the
    last stack's heatmaps (`method` "argmax" with sub-pixel refinement, or "soft"). Generic:
    (N, K) float64 in label units (model.targets["columns"] order)."""
    if task == "generic" and getattr(model, "targets", None) is None:
        raise ValueError("model: a generic estimator needs its targets (mean, std); train it or load it with load_estimator")
    out, size = _batched(model, task, images, batch_size, device, bf16, model)
    if task == "gaze":
        return F.normalize(out, dim=1, eps=1e-12).numpy()
    if task == "generic":
        return out.double().numpy() * np.asarray(model.targets["std"]) + np.asarray(model.targets["mean"])
    heat = out[:, -1].float()
    if model.heatmap_loss == "softmax":  # logits -> probabilities: the sub-pixel fit wants log-heat
        heat = torch.softmax(heat.flatten(2), -1).reshape(heat.shape)
    uv = heatmap_to_uv(heat, method)
    return rescale_uv(uv, model.heatmap_size, size).numpy().astype(np.float32)


def features(model: nn.Module, task: str, images: np.ndarray, batch_size: int = INFERENCE_BATCH, device="cpu",
             bf16: bool = False) -> np.ndarray:
    """Penultimate features (gaze: the FC-1000 activations; hand: last-stack features pooled 4x4)."""
    out, _ = _batched(model, task, images, batch_size, device, bf16, model.features)
    return out.numpy()


# ----------------------------------------------------------------------------------------------
# Checkpoints


def save_estimator(path, model: nn.Module, meta: dict | None = None) -> None:
    """Atomic torch.save of {"model": state_dict, "task", "net_kwargs", "meta", "version"}.

    `meta` must hold plain values (str/int/float/bool/None, lists, dicts) so the file loads with
    weights_only=True. A generic model's `targets` go into meta["targets"]."""
    task = getattr(model, "task", None)
    _check_task(task)
    if task == "generic":
        if model.targets is None:
            raise ValueError("model: a generic estimator has no targets (mean, std) to save; train it with train_estimator")
        meta = {**(meta or {}), "targets": model.targets}
    ckpt = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "task": task,
        "net_kwargs": dict(model.net_kwargs),
        "meta": dict(meta or {}),
        "version": CHECKPOINT_VERSION,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)


def load_estimator(path, device="cpu") -> tuple[nn.Module, dict]:
    """-> (model in eval mode, meta). Only tensors and plain containers are unpickled."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SimganError(f"{path}: estimator checkpoint not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise SimganError(f"{path}: not a loadable estimator checkpoint (expected a weights-only dict "
                          f"saved by save_estimator): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(ckpt, dict) or not {"model", "task", "net_kwargs"} <= set(ckpt):
        raise SimganError(f"{path}: expected a dict with keys 'model', 'task', 'net_kwargs'")
    if ckpt["task"] not in TASKS:
        raise SimganError(f"{path}: task: expected one of {TASKS}, got {ckpt['task']!r}")
    try:
        model = build_estimator(ckpt["task"], ckpt["net_kwargs"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as e:
        raise SimganError(f"{path}: weights do not match the {ckpt['task']} network: {e}") from None
    if ckpt["task"] == "generic":
        model.targets = _load_targets(path, (ckpt.get("meta") or {}).get("targets"), model.net_kwargs["outputs"])
    return model.to(_resolve_device(device)).eval(), dict(ckpt.get("meta") or {})


def _load_targets(path, targets, k: int) -> dict:
    ok = isinstance(targets, dict) and all(isinstance(targets.get(n), list) and len(targets[n]) == k for n in ("columns", "mean", "std"))
    if not ok:
        raise SimganError(f"{path}: meta 'targets': expected {{columns, mean, std}} lists of {k} (one per output), got {targets!r}")
    return {n: list(targets[n]) for n in ("columns", "mean", "std")}
