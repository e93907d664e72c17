"""Device and numeric-format switches shared by every training and inference loop.

CUDA is a device string, not a fork of the code: the same loops run with device="cuda", where
bf16 autocast and channels_last are the usual fast path too."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from simgan.data.format import pixels_to_unit

# params.yaml's `bf16` keys: on, off, or "auto" (on where this machine runs it fast).
BF16_CHOICES = (True, False, "auto")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo); empty elsewhere."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 (flags amx_bf16 and amx_tile)."""
    return {"amx_bf16", "amx_tile"} <= cpu_flags()


def cpu_kind() -> str:
    """The CPU's class for oneDNN's kernels, which set bf16's speed and a trained network's bits:
    "amx", "avx512_bf16" (no AMX), "avx512", "avx2" or "other"."""
    if cpu_has_amx():
        return "amx"
    for flag in ("avx512_bf16", "avx512f", "avx2"):
        if flag in cpu_flags():
            return flag.removesuffix("f")
    return "other"


def resolve_bf16(bf16: bool | str, device: torch.device | str) -> bool:
    """A `bf16` setting (True, False or "auto") -> whether this device runs under bf16 autocast.

    "auto" is bf16 on CUDA and on a CPU with AMX, fp32 on every other CPU. Measured with
    benchmarks/bench_train.py's conv nets, one thread: with AMX bf16 is about 2x fp32; with
    AVX512-BF16 but no AMX it is 0.8-1.2x; on an AVX2-only CPU (AMD EPYC Zen 3) 0.09x, because
    torch has no bf16 convolution kernel there and falls back to a reference loop."""
    if bf16 not in BF16_CHOICES:
        raise ValueError(f"bf16: expected true, false or 'auto', got {bf16!r}")
    if bf16 != "auto":
        return bool(bf16)
    return torch.device(device).type == "cuda" or cpu_has_amx()


def autocast(device: torch.device | str, bf16: bool | str):
    """bf16 autocast (True, or "auto" where it is fast: resolve_bf16); a no-op context when off."""
    dev = torch.device(device)
    if not resolve_bf16(bf16, dev):
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_model_input(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images (stored format) -> float [-1, 1]; float batches pass through unchanged."""
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        batch = pixels_to_unit(batch)
    return batch.contiguous(memory_format=memory_format(channels_last))
