"""Shared measurement helpers.

The development machine is a 2-core VM that other people use at the same time, so absolute times
swing by 2x between minutes. Every benchmark therefore runs the project path and its baseline in
the same process, interleaved (alternating order each repeat), excludes warm-up, and reports the
ratio of medians; the load average is recorded with each result so a reader can judge the noise.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simgan.io import write_json_atomic


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    from simgan.device import kernel_caps, resolve_bf16

    info = {
        "cpu_model": cpu_model(),
        # cpu_kind (amx | avx512_bf16 | avx512 | avx2: oneDNN's kernels, so bf16's speed and the
        # bits) and the kernel caps set in the environment
        **kernel_caps(),
        "bf16_auto": resolve_bf16("auto", "cpu"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "load_average": os.getloadavg(),
    }
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench_device() -> torch.device:
    """The GPU when there is one (the same code path, switched by a device string), else the CPU."""
    from simgan.device import resolve_device

    return resolve_device("auto")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    # torch's OpenMP pool size is process-wide; every measurement sets it explicitly because with
    # 2 threads on a loaded 2-core box the spin barriers alone can cost tens of times the work.
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each callable, `repeats` times, run in alternating order so a burst of load
    from other users hits both paths alike. Warm-up calls (first-touch allocation, oneDNN kernel
    selection, file cache) are not timed."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(times: list[float], work: float) -> dict:
    """`work` units (images, FLOPs) per call; the rate is work / median time."""
    med = statistics.median(times)
    return {"median_s": med, "all_s": times, "per_s": work / med}


def conv_flops(module: torch.nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Forward FLOPs (2 per multiply-add) of every Conv2d/Linear for one input of `input_shape`
    (C, H, W), from the layer shapes met in a real forward pass; returns the total and per layer."""
    layers = []

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            macs = out.numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            macs = out.numel() * mod.in_features
        layers.append(
            {"layer": f"{type(mod).__name__} {tuple(inp[0].shape[1:])}->{tuple(out.shape[1:])}", "flops": 2 * macs}
        )

    handles = [
        m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        with torch.no_grad():
            module(torch.zeros((1, *input_shape), device=next(module.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return {"total": sum(layer["flops"] for layer in layers), "layers": layers}


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch actually dispatches while `fn` runs (forward and backward convolutions and
    matmuls), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_rate(dtype: torch.dtype, n: int, device: torch.device) -> Callable[[], None]:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def run():
        torch.mm(a, b)
        sync(device)

    return run


CEILING_SIZES = (1024, 2048, 4096)


def project_dtype(device: torch.device) -> torch.dtype:
    """The precision the project's default (`bf16: auto`) runs in on this device: the benchmarks
    time that path, and measure the matmul ceiling they compare it to in the same precision."""
    from simgan.device import resolve_bf16

    return torch.bfloat16 if resolve_bf16("auto", device) else torch.float32


def ceiling_fns(
    device: torch.device, dtype: torch.dtype = torch.bfloat16, sizes=CEILING_SIZES
) -> dict[str, Callable[[], None]]:
    """Square matmuls of several sizes, to be timed interleaved with a benchmark's own paths."""
    return {f"ceiling_{str(dtype).replace('torch.', '')}_{n}": matmul_rate(dtype, n, device) for n in sizes}


def pop_ceiling(times: dict[str, list[float]]) -> dict:
    """Remove the ceiling_* entries from `times`; the ceiling is the best size's median GFLOP/s.
    (Which size wins depends on the load: a 4096 matmul streams 100 MB through the shared L3
    and suffers most when other processes use it too.)"""
    per_size = {}
    for key in [k for k in times if k.startswith("ceiling_")]:
        n = int(key.rsplit("_", 1)[1])
        per_size[n] = summary(times.pop(key), 2 * n**3)["per_s"] / 1e9
    return {"gflops": max(per_size.values()), "by_size": per_size}


def load() -> list[float]:
    return list(os.getloadavg())


def write_result(name: str, report: dict) -> Path:
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, report)
    return path


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); a missing value prints as '-'."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_child(module: str, args: list[str], timeout: float) -> dict:
    """Run `python -m module args` in a fresh process (peak RSS is per process) and parse the JSON
    object it prints on its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_bytes() -> int:
    """This process's high-water resident set (VmHWM), which includes memory already freed."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
