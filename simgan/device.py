"""Device and numeric-format switches shared by every training and inference loop.

CUDA is a device string, not a fork of the code: the same loops run with device="cuda", where
bf16 autocast and channels_last are the usual fast path too."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def autocast(device: torch.device | str, bf16: bool):
    """bf16 autocast (about 2x on this CPU for these conv nets); a no-op context when off."""
    dev = torch.device(device)
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_model_input(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images (stored format) -> float [-1, 1]; float batches pass through unchanged."""
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(127.5).sub_(1.0)
    return batch.contiguous(memory_format=memory_format(channels_last))
