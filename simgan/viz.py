"""PNG sample grids: rows of images (e.g. synthetic | refined | real), offline, via Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from simgan.data.format import unit_to_pixels
from simgan.io import atomic_path


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """N x C x H x W in [-1, 1] -> N x H x W (x 3) uint8 (unit_to_pixels: values outside [-1, 1] clamp)."""
    a = unit_to_pixels(t.detach().float()).cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def image_grid(rows: dict[str, torch.Tensor], scale: int = 3, label_width: int = 70, gap: int = 2) -> Image.Image:
    """One row per entry of `rows` (name -> N x C x H x W tensor in [-1, 1]), labelled on the left."""
    arrays = {name: _to_uint8(t) for name, t in rows.items()}
    n = max(len(a) for a in arrays.values())
    h, w = next(iter(arrays.values())).shape[1:3]
    H, W = h * scale, w * scale
    canvas = Image.new("RGB", (label_width + n * (W + gap), len(arrays) * (H + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs) in enumerate(arrays.items()):
        y = r * (H + gap)
        draw.text((4, y + H // 2 - 6), name, fill="black")
        for i, img in enumerate(imgs):
            tile = Image.fromarray(img).convert("RGB").resize((W, H), Image.NEAREST)
            canvas.paste(tile, (label_width + i * (W + gap), y))
    return canvas


def save_image_grid(path: str | Path, rows: dict[str, torch.Tensor], **kwargs) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image_grid(rows, **kwargs).save(tmp, format="PNG", optimize=True)
