"""Refiner and discriminator of S+U learning (Shrivastava et al. 2017, sec. 3 and 4).

Every size is a keyword argument, so the paper's networks and the smaller CPU default are the same
code; `refiner_preset` / `discriminator_preset` hold the paper's gaze and hand configurations
(Shrivastava et al. 2017, sec. 3.1 and 3.2; docs/paper.md).

Conventions (one place): images are N x C x H x W in [-1, 1] (gaze: H=35, W=55 -- never
transposed); the refiner ends in tanh so its output lives in the same range; the discriminator
returns a map of per-patch *logits* (no activation on them -- a ReLU there is one of the public
ports' bugs) of the probability that a patch is REFINED (see `simgan.losses`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _same_padding(kernel: int) -> int:
    if kernel % 2 != 1:
        raise ValueError(f"kernel: expected an odd size so 'same' padding keeps H x W, got {kernel}")
    return kernel // 2


def highpass_residual(x: torch.Tensor, gain: float = 10.0, size: int = 3) -> torch.Tensor:
    """`gain` x (the image minus its size x size mean, replicate padding): the detail smaller than
    the window without the smooth shapes. At size 3 that is the pixel-level texture (noise,
    quantization, grain), where simulated and real images here differ most: the realism classifier
    (simgan.metrics) and the high-pass discriminator see it. Self-regularization's psi "detail9"
    (simgan.losses) is the residual of a 9 x 9 mean."""
    pad = _same_padding(size)
    local_mean = F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)
    return gain * (x - local_mean)


def position_planes(height: int, width: int, octaves: int) -> torch.Tensor:
    """4 * octaves planes of H x W: sin and cos of 2 pi x / P and of 2 pi y / P for the periods
    P = 4, 8, ..., 2^(octaves + 1) px, x and y the pixel's column and row counted from the
    top-left corner (the sinusoidal position code of Vaswani et al. 2017 and NeRF at octave
    periods; period 2 would leave its sine at zero on every pixel)."""
    planes = []
    for j in range(2, octaves + 2):
        period = 2**j
        for n, axis in ((width, 1), (height, 0)):
            phase = 2 * math.pi * (torch.arange(n, dtype=torch.float64) % period) / period
            shape = (1, -1) if axis else (-1, 1)
            for f in (torch.sin, torch.cos):
                planes.append(f(phase).view(shape).expand(height, width))
    return torch.stack(planes).float() if planes else torch.zeros(0, height, width)


class NoiseInjection(nn.Module):
    """StyleGAN's noise input (Karras et al. 2019, sec. 2): one N(0, 1) plane per image added to
    every channel with a learned per-channel scale, zero at the start, so the block begins as the
    deterministic one and learns how much randomness each feature takes."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.scale * noise


class ResnetBlock(nn.Module):
    """Two k x k convolutions with an identity shortcut (He et al. 2016), size-preserving;
    `noise=True` injects a noise plane after the first convolution (NoiseInjection)."""

    def __init__(self, channels: int, kernel: int = 3, padding_mode: str = "zeros", noise: bool = False):
        super().__init__()
        pad = _same_padding(kernel)
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=pad, padding_mode=padding_mode)
        self.conv2 = nn.Conv2d(channels, channels, kernel, padding=pad, padding_mode=padding_mode)
        self.act = nn.ReLU(inplace=True)
        self.noise = NoiseInjection(channels) if noise else None

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv1(x)
        if self.noise is not None:
            y = self.noise(y, noise)
        y = self.conv2(self.act(y))
        return self.act(x + y)


class Refiner(nn.Module):
    """conv k x k (channels) -> `blocks` ResNet blocks -> conv 1x1 to `in_channels` -> tanh.

    No striding or pooling, so the output has the input's H x W and every pixel keeps its place:
    the refiner may change appearance, not geometry (the labels stay valid).

    `residual=True` (not in the paper) adds the input before the tanh, in its pre-image:
    R(x) = tanh(atanh(x) + f(x)), so f = 0 is the identity. Measured on the embedded eyes: the plain
    refiner saturated to a white image within a few hundred adversarial steps (tanh's gradient
    vanishes there and neither loss can pull it back), the residual one did not.

    `noise_channels=k` (not in the paper, whose refiner is deterministic) feeds k channels of
    per-pixel N(0, 1) noise beside the image, so the refiner can draw effects that are random
    in the real domain: a depth sensor's noise, flying pixels and dropouts differ from frame to
    frame over the same surface, and a deterministic refiner can only paint one fixed texture per
    shape. Callers pass the noise (`draw_noise`, from a seeded generator) to stay reproducible;
    without it the forward draws from torch's global RNG.

    `block_noise=True` (not in the paper) injects the noise inside every ResNet block instead, one
    plane per block with a learned per-channel scale (NoiseInjection, StyleGAN-style). The refiner
    takes `noise_planes` = noise_channels + (blocks if block_noise) + (in_channels if output_noise)
    planes per image.

    `position_octaves=k` (not in the paper) feeds 4k planes of position_planes beside the image:
    convolutions are blind to where a pixel is, so a refiner without them cannot draw what a camera
    does by position (vignetting, lens shading, a compression block grid); with them it can. They
    are a function of H x W alone, so the refiner stays deterministic.

    `output_noise=True` (not in the paper) adds sensor noise at the output: refined = mean(x) +
    sigma(x) * n, with n per-pixel N(0, 1) (one more noise plane per image channel, the last ones)
    and sigma >= 0 a map the refiner draws from its last features (`noise_scale`, a 1x1 conv, then
    softplus; it starts at ~0.0025 everywhere). A camera's shot and read noise is white, differs
    from frame to frame and grows with the intensity; a deterministic refiner cannot draw it, and
    one fed noise at the input spreads it through its blocks into blots (docs/experiments.md,
    sessions 6 and 11). Here the noise can only be white, at a level the image content sets. The
    self-regularization reads `mean` (`forward(..., with_mean=True)`): zero-mean noise moves no label."""

    RESIDUAL_CLAMP = 0.995  # atanh(+-1) is infinite; +-0.995 keeps the skip path finite (2.99)
    # noise_scale's pre-softplus offset: sigma starts at softplus(-6) = 0.0025 (0.3 grey levels of
    # 255), so a pretrained refiner is the identity up to a noise no eye could see
    OUTPUT_NOISE_OFFSET = -6.0

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        blocks: int = 4,
        kernel: int = 3,
        residual: bool = False,
        padding_mode: str = "zeros",
        noise_channels: int = 0,
        block_noise: bool = False,
        position_octaves: int = 0,
        output_noise: bool = False,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("channels", channels), ("blocks", blocks)):
            if value < 1:
                raise ValueError(f"Refiner {name}: expected >= 1, got {value}")
        if noise_channels < 0:
            raise ValueError(
                f"Refiner noise_channels: expected >= 0 (0: a deterministic refiner), got {noise_channels}"
            )
        if position_octaves < 0:
            raise ValueError(f"Refiner position_octaves: expected >= 0 (0: no position input), got {position_octaves}")
        self.in_channels = in_channels
        self.noise_channels = noise_channels
        self.position_octaves = position_octaves
        self.block_noise = bool(block_noise)
        self.output_noise = bool(output_noise)
        self.noise_planes = noise_channels + (blocks if block_noise else 0) + (in_channels if self.output_noise else 0)
        # padding_mode "replicate" (not in the paper) keeps the refiner from painting a frame along
        # the border, which zero padding invited on the embedded eyes
        self.stem = nn.Sequential(
            nn.Conv2d(
                in_channels + noise_channels + 4 * position_octaves,
                channels,
                kernel,
                padding=_same_padding(kernel),
                padding_mode=padding_mode,
            ),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            *[ResnetBlock(channels, kernel, padding_mode, noise=self.block_noise) for _ in range(blocks)]
        )
        self.head = nn.Conv2d(channels, in_channels, 1)
        self.residual = residual
        self.noise_scale = None
        if self.output_noise:
            self.noise_scale = nn.Conv2d(channels, in_channels, 1)
            nn.init.zeros_(self.noise_scale.weight)
            nn.init.zeros_(self.noise_scale.bias)

    def draw_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The noise input for a batch like `x` (None for a deterministic refiner), drawn on the CPU
        from `generator` so a seed gives the same noise on every device."""
        if not self.noise_planes:
            return None
        z = torch.randn((x.shape[0], self.noise_planes, *x.shape[2:]), generator=generator)
        return z.to(x.device)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each map `features` returns (the stem's, then every block's)."""
        return [self.stem[0].out_channels] * (1 + len(self.blocks))

    def _trunk(self, x: torch.Tensor, noise: torch.Tensor | None) -> Iterator[torch.Tensor]:
        """The stem's output, then each block's, as they are computed: `forward` keeps only the
        last one alive, as a plain loop would (holding all of them cost 10% of a hand GAN step)."""
        inp = x
        if self.noise_planes:
            if noise is None:
                noise = self.draw_noise(x)
            expected = (x.shape[0], self.noise_planes, *x.shape[2:])
            if tuple(noise.shape) != expected:
                raise ValueError(
                    f"Refiner noise: expected shape {expected} (N x noise_planes x H x W: noise_channels, "
                    f"then one plane per block with block_noise, then in_channels with output_noise), "
                    f"got {tuple(noise.shape)}"
                )
            noise = noise.to(device=x.device, dtype=x.dtype)
            if self.noise_channels:
                inp = torch.cat([x, noise[:, : self.noise_channels]], dim=1)
        elif noise is not None:
            raise ValueError(
                "Refiner noise: this refiner has no noise input (noise_channels=0, block_noise and output_noise off)"
            )
        if self.position_octaves:
            pos = position_planes(x.shape[2], x.shape[3], self.position_octaves).to(device=x.device, dtype=x.dtype)
            inp = torch.cat([inp, pos.expand(x.shape[0], -1, -1, -1)], dim=1)
        h = self.stem(inp)
        yield h
        for i, block in enumerate(self.blocks):
            plane = self.noise_channels + i
            h = block(h, noise[:, plane : plane + 1] if block.noise is not None else None)
            yield h

    def features(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The refiner's feature maps of `x`, all H x W: the stem's output, then each block's."""
        return list(self._trunk(x, noise))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`features` with every noise plane at zero: the image's own content, which PatchNCE
        compares between a synthetic image and its refined version (CUT uses the generator's
        encoder the same way)."""
        zero = x.new_zeros((x.shape[0], self.noise_planes, *x.shape[2:])) if self.noise_planes else None
        return self.features(x, zero)

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None, with_mean: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The refined batch; with `with_mean`, (refined, mean): also its noise-free part (the same
        tensor without output_noise), which the self-regularization reads."""
        out, mean = self._refined_and_mean(x, noise)
        return (out, mean) if with_mean else out

    def _refined_and_mean(self, x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.output_noise and noise is None:
            noise = self.draw_noise(x)
        for h in self._trunk(x, noise):  # noqa: B007 (the last map is the one the head reads)
            pass
        f = self.head(h)
        if self.residual:
            # the clamped-off part is added back, so f = 0 is the identity at +-1 too: a depth
            # map's background is exactly 1.0, and refining it to 0.995 let D tell refined hands
            # from real ones by the background alone
            xc = x.clamp(-self.RESIDUAL_CLAMP, self.RESIDUAL_CLAMP)
            mean = (torch.tanh(f + torch.atanh(xc)) + (x - xc)).clamp(-1.0, 1.0)
        else:
            mean = torch.tanh(f)
        if self.noise_scale is None:
            return mean, mean
        sigma = F.softplus(self.noise_scale(h) + self.OUTPUT_NOISE_OFFSET)
        n = noise[:, -self.in_channels :].to(device=x.device, dtype=mean.dtype)
        return (mean + sigma * n).clamp(-1.0, 1.0), mean


class PatchProjector(nn.Module):
    """CUT's projection head (Park et al. 2020, sec. 3.1): for each feature map, a two-layer MLP
    that takes the feature vector at each sampled location to a unit vector of `dim` dimensions.
    PatchNCE (simgan.losses.patch_nce_loss) compares these vectors."""

    def __init__(self, channels: Sequence[int], dim: int = 256):
        super().__init__()
        if not channels or dim < 1:
            raise ValueError(f"PatchProjector: expected one or more feature maps and dim >= 1, got {channels}, {dim}")
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim)) for c in channels
        )

    def forward(self, maps: Sequence[torch.Tensor], locations: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """maps: N x C x H x W each; locations: for each map, the flat indices (into H*W) to sample.
        Returns, per map, N x P x dim unit vectors."""
        out = []
        for h, idx, mlp in zip(maps, locations, self.mlps, strict=True):
            v = h.flatten(2)[:, :, idx].transpose(1, 2)  # N x P x C
            out.append(F.normalize(mlp(v), dim=-1))
        return out


# Discriminator layer specs: ("conv", out_channels, kernel, stride) or ("pool", kernel, stride).
# The paper ends in conv1x1 -> 2 channels -> softmax; a 2-way softmax over logits (a, b) equals a
# sigmoid of (a - b), so we end in one logit per patch: same function, no redundant parameters.
GAZE_DISCRIMINATOR_LAYERS: tuple = (
    ("conv", 96, 3, 2),
    ("conv", 64, 3, 2),
    ("pool", 3, 1),
    ("conv", 32, 3, 1),
    ("conv", 32, 1, 1),
)
HAND_DISCRIMINATOR_LAYERS: tuple = (
    ("conv", 96, 7, 4),
    ("conv", 64, 5, 2),
    ("pool", 3, 2),
    ("conv", 32, 3, 2),
    ("conv", 32, 1, 1),
)
# The paper's hand discriminator reduces 224 px by 32 to a 7x7 patch map; at the CPU default's
# 64 px the same stack would leave 2x2 patches, so the CPU profile reduces by 8 (an 8x8 map).
HAND_CPU_DISCRIMINATOR_LAYERS: tuple = (
    ("conv", 96, 5, 2),
    ("conv", 64, 3, 2),
    ("pool", 3, 2),
    ("conv", 32, 3, 1),
    ("conv", 32, 1, 1),
)


class Discriminator(nn.Module):
    """Fully convolutional; returns N x scales x h x w per-patch logits ("this patch is refined").

    With `global_output=True` the last feature map is averaged to one location before the final
    1x1 conv: one logit per image, the paper's "global adversarial loss" ablation.

    Not in the paper: `highpass=True` shows D each image beside its highpass_residual, as the
    realism classifier sees it, so it judges the texture the simulator lacks; `spectral_norm=True`
    constrains every convolution's spectral norm to 1 (Miyato et al. 2018), a Lipschitz D;
    `scales=S` adds S - 1 networks of the same layers that judge the image average-pooled 2x, 4x,
    ... (the multi-scale D of pix2pixHD, Wang et al. 2018): a coarser scale's patches cover twice
    the image, so shading at the size of the lids is judged too, not only the local texture. Each
    scale's logit map is resized to the first's (nearest) and stacked as a channel, so every scale
    weighs the same in the per-patch means of simgan.losses. With scales=1 the network, its
    initialisation and its state dict are the single-scale D's."""

    def __init__(
        self,
        in_channels: int = 1,
        layers: Sequence[tuple] = GAZE_DISCRIMINATOR_LAYERS,
        width: float = 1.0,
        global_output: bool = False,
        highpass: bool = False,
        spectral_norm: bool = False,
        scales: int = 1,
    ):
        super().__init__()
        if width <= 0:
            raise ValueError(f"Discriminator width: expected > 0, got {width}")
        if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
            raise ValueError(f"Discriminator scales: expected an integer >= 1 (1: one scale), got {scales!r}")
        self.highpass = bool(highpass)
        self.global_output = global_output
        channels = 2 * in_channels if highpass else in_channels
        self.features, self.head = self._network(channels, layers, width, spectral_norm)
        # built after the first scale's, so scales=1 draws the same initial weights as before
        self.coarser = nn.ModuleList(
            nn.ModuleDict(dict(zip(("features", "head"), self._network(channels, layers, width, spectral_norm))))
            for _ in range(scales - 1)
        )

    @staticmethod
    def _network(
        channels: int, layers: Sequence[tuple], width: float, spectral_norm: bool
    ) -> tuple[nn.Module, nn.Module]:
        norm = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda conv: conv)
        modules: list[nn.Module] = []
        for spec in layers:
            kind = spec[0]
            if kind == "conv":
                _, out, kernel, stride = spec
                out = max(1, round(out * width))
                modules += [
                    norm(nn.Conv2d(channels, out, kernel, stride=stride, padding=_same_padding(kernel))),
                    nn.ReLU(inplace=True),
                ]
                channels = out
            elif kind == "pool":
                _, kernel, stride = spec
                modules.append(nn.MaxPool2d(kernel, stride=stride, padding=_same_padding(kernel)))
            else:
                raise ValueError(f"Discriminator layers: unknown layer kind {kind!r}, expected 'conv' or 'pool'")
        return nn.Sequential(*modules), norm(nn.Conv2d(channels, 1, 1))

    @property
    def scales(self) -> int:
        return 1 + len(self.coarser)

    def _judge(self, x: torch.Tensor, features: nn.Module, head: nn.Module) -> torch.Tensor:
        if self.highpass:
            x = torch.cat([x, highpass_residual(x)], dim=1)
        h = features(x)
        if self.global_output:
            h = h.mean(dim=(2, 3), keepdim=True)
        return head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self._judge(x, self.features, self.head)
        if not self.coarser:
            return logits
        maps = [logits]
        for scale in self.coarser:
            x = F.avg_pool2d(x, 2, ceil_mode=True)
            coarse = self._judge(x, scale["features"], scale["head"])
            maps.append(F.interpolate(coarse, size=logits.shape[-2:], mode="nearest"))
        return torch.cat(maps, dim=1)


# Presets: "paper" is the paper's sec. 3.1 / 3.2 (docs/paper.md); "cpu" is the default profile's smaller size, measured to
# train in minutes on 2 cores (same code, fewer channels).
REFINER_PRESETS = {
    "gaze": {
        "paper": dict(channels=64, blocks=4, kernel=3),
        "cpu": dict(channels=32, blocks=4, kernel=3, residual=True, padding_mode="replicate"),
    },
    "hand": {
        "paper": dict(channels=64, blocks=10, kernel=7),
        "cpu": dict(channels=16, blocks=3, kernel=3, residual=True, padding_mode="replicate"),
    },
}
DISCRIMINATOR_PRESETS = {
    "gaze": {
        "paper": dict(layers=GAZE_DISCRIMINATOR_LAYERS, width=1.0),
        "cpu": dict(layers=GAZE_DISCRIMINATOR_LAYERS, width=1.0),
    },
    "hand": {
        "paper": dict(layers=HAND_DISCRIMINATOR_LAYERS, width=1.0),
        "cpu": dict(layers=HAND_CPU_DISCRIMINATOR_LAYERS, width=1.0),
    },
}


def _preset(table: dict, kind: str, task: str, size: str) -> dict:
    if task not in table:
        raise ValueError(f"{kind} preset task: expected one of {sorted(table)}, got {task!r}")
    if size not in table[task]:
        raise ValueError(f"{kind} preset size: expected one of {sorted(table[task])}, got {size!r}")
    return dict(table[task][size])


def refiner_preset(task: str, size: str = "paper") -> dict:
    return _preset(REFINER_PRESETS, "refiner", task, size)


def discriminator_preset(task: str, size: str = "paper") -> dict:
    return _preset(DISCRIMINATOR_PRESETS, "discriminator", task, size)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
