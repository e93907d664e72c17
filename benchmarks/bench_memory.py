"""Peak memory (RSS high-water mark, VmHWM) of refinement at N = 10k, 100k, 1M images and of
training with a B = 128k history buffer; each measured in its own fresh process.

    .venv/bin/python -m benchmarks.bench_memory [--ns 10000 100000 1000000] [--history 131072]

The 1M-image gaze file (~1.9 GB) is written with DatasetWriter from a repeated rendered chunk;
the refinements of 10k and 100k read the first rows of the same file. A tiny refiner keeps the
1M run short: the question is whether memory grows with N, and the network's activations are
per batch, not per N (the paper refiner's own peak is measured separately at a small N).
The bar: peak RSS under 1.5 GiB at every N, and flat in N.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import load, machine, peak_rss_bytes, run_child, table, write_result

GIB = 1 << 30
BAR_BYTES = int(1.5 * GIB)
TINY = dict(channels=4, blocks=1, kernel=3)


def write_big_source(path: Path, n: int, chunk: int = 8192) -> float:
    """A gaze file of n rows: one rendered chunk of images and labels appended over and over."""
    from simgan.data.format import DatasetWriter
    from simgan.sim.eyes import render_eyes

    block = render_eyes(chunk, seed=0, domain="synthetic", workers=1)
    attrs = {"task": "gaze", "domain": "synthetic", "source": "bench_memory", "seed": 0, "repeated_chunk": chunk}
    t0 = time.perf_counter()
    with DatasetWriter(path, attrs) as w:
        for s in range(0, n, chunk):
            k = min(chunk, n - s)
            w.append({key: v[:k] for key, v in block.items()})
    return time.perf_counter() - t0


# -- children (one process per measurement: VmHWM never goes down) ----------------------------
def child_refine(src: str, rows: int, size: str, batch: int) -> dict:
    import torch

    from simgan.nets import Refiner, refiner_preset
    from simgan.refine import refine_dataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    refiner = Refiner(**(TINY if size == "tiny" else refiner_preset("gaze", size)))
    before = peak_rss_bytes()
    dst = Path(tempfile.mkdtemp(prefix="bench_mem_")) / "refined.h5"
    t0 = time.perf_counter()
    try:
        refine_dataset(
            src, dst, refiner, rows=slice(0, rows), batch_size=batch, bf16=True, channels_last=True, progress=False
        )
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(dst.parent, ignore_errors=True)
    return {
        "kind": "refine",
        "refiner": size,
        "n": rows,
        "batch": batch,
        "seconds": seconds,
        "images_per_s": rows / seconds,
        "peak_rss_before_bytes": before,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def child_history(capacity: int, batch: int, steps: int) -> dict:
    """Trainer with a full B-image float16 history buffer (every slot written, so every page is
    resident), cpu-size networks, then `steps` adversarial steps."""
    import torch

    from simgan.nets import Discriminator, Refiner, discriminator_preset, refiner_preset
    from simgan.train import SimGANTrainer, TrainConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.randint(0, 256, (4096, 1, 35, 55), dtype=torch.uint8)
    cfg = TrainConfig(
        steps=10**6,
        pretrain_refiner_steps=0,
        pretrain_discriminator_steps=0,
        batch_size=batch,
        history_size=capacity,
        bf16=True,
        channels_last=True,
    )
    t = SimGANTrainer(
        Refiner(**refiner_preset("gaze", "cpu")),
        Discriminator(**discriminator_preset("gaze", "cpu")),
        data,
        data,
        cfg,
        progress=False,
    )
    stages = {"constructed": peak_rss_bytes()}
    g = torch.Generator().manual_seed(0)
    for s in range(0, capacity, 8192):
        t.buffer.add(torch.rand((min(8192, capacity - s), 1, 35, 55)) * 2 - 1, g)
    stages["buffer_filled"] = peak_rss_bytes()
    for _ in range(steps):
        t.train_step()
    stages["after_steps"] = peak_rss_bytes()
    return {
        "kind": "train_history",
        "history_size": capacity,
        "buffer_bytes": t.buffer.images.numel() * t.buffer.images.element_size(),
        "batch": batch,
        "steps": steps,
        "buffer_full": t.buffer.full,
        "peak_rss_by_stage_bytes": stages,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def child_floor() -> dict:
    """What importing torch and simgan costs before any work: the baseline of every child."""
    import torch  # noqa: F401

    import simgan.refine
    import simgan.train  # noqa: F401

    return {"kind": "import_floor", "peak_rss_bytes": peak_rss_bytes()}


def run(ns=(10_000, 100_000, 1_000_000), history: int = 131_072, paper_n: int = 2048, timeout: float = 900) -> dict:
    load_before = load()
    ns = sorted(ns)
    rows = [run_child("benchmarks.bench_memory", ["--child", "floor"], timeout)]
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        src = Path(tmp) / "synthetic_big.h5"
        need = 2.2 * ns[-1] * 35 * 55  # source + refined output, with HDF5 overhead
        free = shutil.disk_usage(tmp).free
        if free < need:
            raise SystemExit(
                f"bench_memory: {tmp} has {free / GIB:.1f} GiB free, need {need / GIB:.1f} GiB for N = {ns[-1]}; pass smaller --ns"
            )
        write_s = write_big_source(src, ns[-1])
        print(f"wrote {ns[-1]} images ({src.stat().st_size / GIB:.2f} GiB) in {write_s:.1f} s", flush=True)
        for n in ns:
            rows.append(
                run_child(
                    "benchmarks.bench_memory",
                    ["--child", "refine", "--src", str(src), "--rows", str(n), "--size", "tiny"],
                    timeout,
                )
            )
            print(
                f"refine N={n}: peak RSS {rows[-1]['peak_rss_bytes'] / GIB:.3f} GiB, {rows[-1]['seconds']:.1f} s",
                flush=True,
            )
        if paper_n:
            rows.append(
                run_child(
                    "benchmarks.bench_memory",
                    ["--child", "refine", "--src", str(src), "--rows", str(paper_n), "--size", "paper"],
                    timeout,
                )
            )
    if history:
        rows.append(run_child("benchmarks.bench_memory", ["--child", "history", "--history", str(history)], timeout))
    for r in rows:
        r["peak_rss_gib"] = r["peak_rss_bytes"] / GIB
    refine_peaks = [r["peak_rss_bytes"] for r in rows if r["kind"] == "refine" and r["refiner"] == "tiny"]
    report = {
        "machine": machine(),
        "load_before": load_before,
        "load_after": load(),
        "source_write_s": write_s,
        "results": rows,
        "bar_bytes": BAR_BYTES,
        "refine_under_bar": max(refine_peaks) < BAR_BYTES,
        # flat: the largest N costs at most 10% (or 64 MiB) more than the smallest
        "refine_growth_bytes": refine_peaks[-1] - refine_peaks[0],
        "refine_flat": refine_peaks[-1] - refine_peaks[0] < max(0.1 * refine_peaks[0], 64 << 20),
    }
    print(
        table(
            rows,
            [
                ("kind", "what", "s"),
                ("refiner", "refiner", "s"),
                ("n", "N", "d"),
                ("history_size", "B", "d"),
                ("seconds", "s", ".1f"),
                ("peak_rss_gib", "peak RSS GiB", ".3f"),
            ],
        )
    )
    print(
        f"refinement peak RSS {'under' if report['refine_under_bar'] else 'OVER'} 1.5 GiB, growth from N={ns[0]} to N={ns[-1]}: "
        f"{report['refine_growth_bytes'] / (1 << 20):.0f} MiB ({'flat' if report['refine_flat'] else 'GROWS'})"
    )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result(f"memory_{ns[-1]}", report)
    return report


def main(argv=None) -> int:
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--history", type=int, default=131_072, help="0 to skip the training check")
    p.add_argument("--paper-n", type=int, default=2048, help="paper-refiner peak at this N; 0 to skip")
    p.add_argument("--child", choices=["refine", "history", "floor"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", default="tiny", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child == "refine":
        print(json.dumps(child_refine(a.src, a.rows, a.size, a.batch)))
    elif a.child == "history":
        print(json.dumps(child_history(a.history, 64, 2)))
    elif a.child == "floor":
        print(json.dumps(child_floor()))
    else:
        run(a.ns, a.history, a.paper_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
