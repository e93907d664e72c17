"""The machine's compute ceiling and the FLOP counts of the paper's gaze networks.

    .venv/bin/python -m benchmarks.bench_ceiling [--threads 1 2] [--repeats 3]

Ceiling = the best of square matmuls of 1024, 2048, 4096 (bf16; fp32 up to 2048), GFLOP/s, median of
`repeats` after a warm-up, at each thread count; the other benchmarks divide their achieved GFLOP/s by these. The refiner's
forward FLOPs are counted from its layer shapes (conv: 2 x out pixels x out channels x in
channels x k x k), not quoted from the paper.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import (
    CEILING_SIZES,
    bench_device,
    ceiling_fns,
    conv_flops,
    interleaved,
    load,
    machine,
    pop_ceiling,
    table,
    threads,
    write_result,
)

GAZE_SHAPE = (1, 35, 55)


def paper_flops() -> dict:
    from simgan.nets import Discriminator, Refiner, discriminator_preset, refiner_preset

    torch.manual_seed(0)
    r = conv_flops(Refiner(**refiner_preset("gaze", "paper")), GAZE_SHAPE)
    d = conv_flops(Discriminator(**discriminator_preset("gaze", "paper")), GAZE_SHAPE)
    return {
        "refiner_forward_per_image": r["total"],
        "discriminator_forward_per_image": d["total"],
        "refiner_layers": r["layers"],
        "discriminator_layers": d["layers"],
    }


def measure_ceiling(thread_counts=(1, 2), repeats: int = 3, device: torch.device | None = None) -> dict:
    device = device or bench_device()
    out = {}
    for n_threads in thread_counts:
        with threads(n_threads):
            fns = {
                f"{dt}_{k}": f
                for dt in (torch.float32, torch.bfloat16)
                for k, f in ceiling_fns(device, dt, CEILING_SIZES[:2] if dt == torch.float32 else CEILING_SIZES).items()
            }
            times = interleaved(fns, repeats)
        for dt in (torch.float32, torch.bfloat16):
            mine = {k.split("_", 1)[1]: t for k, t in times.items() if k.startswith(f"{dt}_")}
            c = pop_ceiling(mine)
            name = str(dt).replace("torch.", "")
            best = max(c["by_size"], key=c["by_size"].get)
            out[f"{name}_t{n_threads}"] = {
                "dtype": name,
                "threads": n_threads,
                "n": best,
                "gflops": c["gflops"],
                "by_size": c["by_size"],
            }
    return out


def run(thread_counts=(1, 2), repeats: int = 3) -> dict:
    load_before = load()
    flops = paper_flops()
    ceiling = measure_ceiling(thread_counts, repeats)
    report = {
        "machine": machine(),
        "device": str(bench_device()),
        "load_before": load_before,
        "load_after": load(),
        "flops": flops,
        "ceiling": ceiling,
    }
    print(
        f"paper gaze refiner forward: {flops['refiner_forward_per_image'] / 1e9:.3f} GFLOP per 35x55 image "
        f"(per layer, MFLOP: {' '.join(format(x['flops'] / 1e6, '.1f') for x in flops['refiner_layers'])})"
    )
    print(f"paper gaze discriminator forward: {flops['discriminator_forward_per_image'] / 1e6:.1f} MFLOP per image")
    print(
        table(
            list(ceiling.values()),
            [("dtype", "matmul", "s"), ("threads", "threads", "d"), ("n", "n", "d"), ("gflops", "GFLOP/s", ".1f")],
        )
    )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result("ceiling", report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    run(tuple(a.threads), a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
