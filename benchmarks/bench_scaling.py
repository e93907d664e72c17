"""Scaling: time vs N for refinement and eye generation (linear expected), and refinement vs
threads (1, 2) and vs processes (two 1-thread processes on row halves, the sharded path).

    .venv/bin/python -m benchmarks.bench_scaling [--ns 500 1000 2000] [--gen-ns 1000 2000 4000]
        [--repeats 2] [--size cpu]

Refinement uses the CPU-profile gaze refiner (bf16 + channels_last) by default so the sweep fits
in a short run; `--size paper` for the paper's. Linearity is reported as the least-squares fit
seconds = fixed + per_image * N with its R^2, and per-image time at each N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, interleaved, load, machine, summary, table, threads, write_result


def linear_fit(ns, seconds) -> dict:
    a, b = np.polyfit(np.asarray(ns, float), np.asarray(seconds, float), 1)
    pred = a * np.asarray(ns) + b
    ss_res = float(((np.asarray(seconds) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(seconds) - np.mean(seconds)) ** 2).sum()) or 1e-12
    return {"per_image_s": float(a), "fixed_s": float(b), "r2": 1 - ss_res / ss_tot}


def refiner(size: str):
    from simgan.nets import Refiner, refiner_preset

    torch.manual_seed(0)
    return Refiner(**refiner_preset("gaze", size))


def child_refine(src: str, start: int, stop: int, size: str, n_threads: int) -> dict:
    from simgan.refine import refine_dataset

    torch.set_num_threads(n_threads)
    net = refiner(size)
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        refine_dataset(
            src,
            Path(tmp) / "warm.h5",
            net,
            rows=slice(start, min(stop, start + 64)),
            bf16=True,
            channels_last=True,
            progress=False,
        )
        t0 = time.perf_counter()
        refine_dataset(
            src, Path(tmp) / "part.h5", net, rows=slice(start, stop), bf16=True, channels_last=True, progress=False
        )
        return {"seconds": time.perf_counter() - t0}


def two_processes(src: Path, n: int, size: str) -> dict:
    """Two 1-thread processes, each refining half the rows (what refine_sharded does on one
    machine); wall time from launch (imports included) and the slower worker's compute time."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_scaling", "--child", str(src), str(s), str(e), size],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for s, e in ((0, n // 2), (n // 2, n))
    ]
    outs = [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("bench_scaling: a refinement worker process failed")
    return {"wall_s": time.perf_counter() - t0, "compute_s": max(o["seconds"] for o in outs)}


def run(
    ns=(500, 1000, 2000), gen_ns=(1000, 2000, 4000), repeats: int = 2, size: str = "cpu", processes: bool = True
) -> dict:
    from simgan.refine import refine_dataset
    from simgan.sim.eyes import render_eyes, simulate_eyes_to_file

    load_before = load()
    report: dict = {"machine": machine(), "load_before": load_before, "repeats": repeats, "refiner": size}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "synthetic.h5"
        simulate_eyes_to_file(src, max(ns), 0, workers=1, progress=False)
        net = refiner(size)

        def refine(n):
            return lambda: refine_dataset(
                src, tmp / f"r{n}.h5", net, rows=slice(0, n), bf16=True, channels_last=True, progress=False
            )

        with threads(1):
            refine(64)()
            t = interleaved({n: refine(n) for n in ns}, repeats, warmup=0)
        rows = [
            {
                "what": "refine",
                "n": n,
                "threads": 1,
                "median_s": summary(t[n], n)["median_s"],
                "images_per_s": summary(t[n], n)["per_s"],
            }
            for n in ns
        ]
        report["refine_fit"] = linear_fit(ns, [r["median_s"] for r in rows])

        with threads(1):
            render_eyes(256, 0, workers=1)
            g = interleaved({n: (lambda n=n: render_eyes(n, 0, workers=1)) for n in gen_ns}, repeats, warmup=0)
        gen = [
            {
                "what": "generate",
                "n": n,
                "threads": 1,
                "median_s": summary(g[n], n)["median_s"],
                "images_per_s": summary(g[n], n)["per_s"],
            }
            for n in gen_ns
        ]
        report["generate_fit"] = linear_fit(gen_ns, [r["median_s"] for r in gen])
        rows += gen

        n = max(ns)
        by_threads = {}
        for k in (1, 2):
            with threads(k):
                by_threads[k] = interleaved({k: refine(n)}, repeats, warmup=0)[k]
        for k, t in by_threads.items():
            rows.append(
                {
                    "what": "refine threads",
                    "n": n,
                    "threads": k,
                    "median_s": summary(t, n)["median_s"],
                    "images_per_s": summary(t, n)["per_s"],
                }
            )
        if processes:
            p = two_processes(src, n, size)
            rows.append(
                {
                    "what": "refine 2 procs",
                    "n": n,
                    "threads": 1,
                    "median_s": p["compute_s"],
                    "images_per_s": n / p["compute_s"],
                    "wall_with_startup_s": p["wall_s"],
                }
            )
    one = next(r for r in rows if r["what"] == "refine threads" and r["threads"] == 1)
    for r in rows:
        if r["what"].startswith("refine ") and r["n"] == one["n"]:
            r["x_1_thread"] = r["images_per_s"] / one["images_per_s"]
    report.update(results=rows, load_after=load())
    print(
        table(
            rows,
            [
                ("what", "what", "s"),
                ("n", "N", "d"),
                ("threads", "threads", "d"),
                ("median_s", "s", ".2f"),
                ("images_per_s", "img/s", ".0f"),
                ("x_1_thread", "x 1 thread", ".2f"),
            ],
        )
    )
    for k in ("refine_fit", "generate_fit"):
        f = report[k]
        print(
            f"{k.split('_')[0]}: {1e3 * f['per_image_s']:.2f} ms/image + {f['fixed_s']:.2f} s fixed, R^2 {f['r2']:.3f}"
        )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result("scaling", report)
    return report


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        src, start, stop, size = sys.argv[2:6]
        print(json.dumps(child_refine(src, int(start), int(stop), size, 1)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", type=int, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--gen-ns", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--size", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--no-processes", action="store_true")
    a = p.parse_args(argv)
    run(tuple(a.ns), tuple(a.gen_ns), a.repeats, a.size, not a.no_processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
