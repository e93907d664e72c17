"""Device and numeric-format switches shared by every training and inference loop.

CUDA is a device string, not a fork of the code: the same loops run with device="cuda", where
bf16 autocast and channels_last are the usual fast path too."""

from __future__ import annotations

import contextlib
import functools
import os
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


# The CPU kinds, slowest kernel family first (cpu_kind).
CPU_KINDS = ("other", "avx2", "avx512", "avx512_bf16", "amx")

# Each value oneDNN takes in ONEDNN_MAX_CPU_ISA (its CPU dispatcher control, read when torch first
# runs a oneDNN kernel) -> the highest CPU kind whose kernels it still allows. DEFAULT: no cap.
ONEDNN_ISA_KINDS = {
    "SSE41": "other",
    "AVX": "other",
    "AVX2": "avx2",
    "AVX2_VNNI": "avx2",
    "AVX2_VNNI_2": "avx2",
    "AVX512_CORE": "avx512",
    "AVX512_CORE_VNNI": "avx512",
    "AVX512_CORE_BF16": "avx512_bf16",
    "AVX10_1_512": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16",
    "AVX10_2_512": "avx512_bf16",
    "AVX10_1_512_AMX": "amx",
    "AVX512_CORE_AMX": "amx",
    "AVX10_1_512_AMX_FP16": "amx",
    "AVX512_CORE_AMX_FP16": "amx",
    "AVX10_2_512_AMX_2": "amx",
    "DEFAULT": "amx",
}

# The libraries inside torch that pick their kernels by the CPU's instruction set, each capped by
# its own environment variable. Measured (docs/performance.md, "Bits across CPUs"): on an AMX Xeon
# in fp32 with oneDNN and MKL capped at AVX2, the hand refiners trained bit for bit as on an
# AVX2-only AMD EPYC; with either one left uncapped the bits differed, and ATen's level did not
# change them (it does change the simulated gaze eyes' rounding).
KERNEL_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def onednn_isa_cap() -> str | None:
    """The CPU kind ONEDNN_MAX_CPU_ISA caps oneDNN at, None when unset (or DEFAULT)."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if not value or value == "DEFAULT":
        return None
    if value not in ONEDNN_ISA_KINDS:
        raise ValueError(
            f"environment variable ONEDNN_MAX_CPU_ISA: expected one of {', '.join(ONEDNN_ISA_KINDS)}, got {value!r}"
        )
    return ONEDNN_ISA_KINDS[value]


def cpu_kind() -> str:
    """The class of oneDNN kernels this process runs, which sets bf16's speed and a trained
    network's bits: "amx", "avx512_bf16" (no AMX), "avx512", "avx2" or "other". That is the CPU's
    own class, lowered to ONEDNN_MAX_CPU_ISA's where that variable caps oneDNN below it."""
    kind = "other"
    if cpu_has_amx():
        kind = "amx"
    else:
        for flag in ("avx512_bf16", "avx512f", "avx2"):
            if flag in cpu_flags():
                kind = flag.removesuffix("f")
                break
    cap = onednn_isa_cap()
    return kind if cap is None else min(kind, cap, key=CPU_KINDS.index)


def kernel_caps() -> dict[str, str | None]:
    """Which kernels this process's torch runs: the CPU kind, each cap variable as set (None when
    unset) and ATen's own vectorization level (torch.backends.cpu.get_cpu_capability). Recorded
    beside every result, because each of them changes a trained network's bits."""
    caps = {"cpu_kind": cpu_kind()}
    caps.update({name: os.environ.get(name) for name in KERNEL_CAP_VARIABLES})
    caps["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    return caps


def resolve_bf16(bf16: bool | str, device: torch.device | str) -> bool:
    """A `bf16` setting (True, False or "auto") -> whether this device runs under bf16 autocast.

    "auto" is bf16 on CUDA and where oneDNN runs AMX kernels (cpu_kind "amx": an AMX CPU that
    ONEDNN_MAX_CPU_ISA does not cap below AMX), fp32 on every other CPU. Measured with
    benchmarks/bench_train.py's conv nets, one thread: with AMX bf16 is about 2x fp32; with
    AVX512-BF16 but no AMX it is 0.8-1.2x; on an AVX2-only CPU (AMD EPYC Zen 3) 0.09x, because
    torch has no bf16 convolution kernel there and falls back to a reference loop."""
    if bf16 not in BF16_CHOICES:
        raise ValueError(f"bf16: expected true, false or 'auto', got {bf16!r}")
    if bf16 != "auto":
        return bool(bf16)
    return torch.device(device).type == "cuda" or cpu_kind() == "amx"


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
