"""Run every benchmark and check the performance bars.

    .venv/bin/python -m benchmarks            # short profile (a few minutes on an idle 2-core CPU)
    .venv/bin/python -m benchmarks --full     # + batch 512, 2 threads for training, refinement
                                              #   variants, the 1M-image memory run
    .venv/bin/python -m benchmarks --only refine train

Each benchmark writes benchmarks/results/<name>.json; this writes benchmarks/results/summary.json
with the bars, their measured values and the load average before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks import (
    bench_ceiling,
    bench_importers,
    bench_memory,
    bench_opencv,
    bench_refine,
    bench_scaling,
    bench_train,
)
from benchmarks.common import ROOT, load, machine, table, write_result

NAMES = ("ceiling", "train", "refine", "memory", "scaling", "simulators", "importers", "opencv")


def simulators(full: bool) -> dict:
    """The simulator benchmark is its own script (benchmarks/bench_simulators.py); run it short, into
    a separate JSON so its full-size results file stays as its owner wrote it."""
    args = [
        "--n-eyes",
        "10000" if full else "1000",
        "--n-hands",
        "2000" if full else "300",
        "--repeats",
        "3" if full else "2",
        "--samples",
        "",
        "--json",
        "benchmarks/results/simulators_run.json",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_simulators.py", *args], cwd=ROOT, text=True, capture_output=True
    )
    print(proc.stdout[-3000:], end="")
    if proc.returncode != 0:
        raise RuntimeError(f"bench_simulators failed: {proc.stderr[-2000:]}")
    return {"seconds": time.perf_counter() - t0}


def bars(results: dict) -> list[dict]:
    out = []

    def bar(name, value, target, ok, unit=""):
        out.append({"bar": name, "value": value, "target": target, "unit": unit, "pass": bool(ok)})

    if "train" in results:
        b64 = [r for r in results["train"]["results"] if r["path"] == "project" and r["batch"] == 64]
        if b64:
            best = max(r["x_naive"] for r in b64)
            bar("training step vs naive, batch 64", best, ">= 2.5", best >= 2.5, "x")
    if "refine" in results:
        rows = {r["path"]: r for r in results["refine"]["results"]}
        p = rows["project"]
        bar("refinement vs naive (per image)", p["x_naive_b1"], ">= 3", p["x_naive_b1"] >= 3, "x")
        bar("refinement vs naive (16 per batch)", p["x_naive_b16"], ">= 3", p["x_naive_b16"] >= 3, "x")
        if "compiled" in rows:
            c = rows["compiled"]
            bar("refinement (eager), fraction of the matmul ceiling", p["fraction_of_ceiling"], "(reported)", True)
            bar(
                "refinement (compile=True), fraction of the matmul ceiling",
                c["fraction_of_ceiling"],
                ">= 0.60",
                c["fraction_of_ceiling"] >= 0.6,
            )
        else:
            bar(
                "refinement, fraction of the matmul ceiling",
                p["fraction_of_ceiling"],
                ">= 0.60",
                p["fraction_of_ceiling"] >= 0.6,
            )
        for k in [k for k in results["refine"] if k.startswith("accuracy_")]:
            a = results["refine"][k]["within_1_grey_level"]
            bar(f"bf16 within 1 grey level ({k.split('_', 1)[1]})", a, ">= 0.99", a >= 0.99)
    if "memory" in results:
        m = results["memory"]
        refine_rows = [r for r in m["results"] if r["kind"] == "refine"]
        peak = max(r["peak_rss_gib"] for r in refine_rows)
        largest = max(r["n"] for r in refine_rows)
        bar(f"refinement peak RSS (N up to {largest})", peak, "< 1.5", m["refine_under_bar"], "GiB")
        bar("refinement peak RSS growth over N", m["refine_growth_bytes"] / (1 << 20), "flat", m["refine_flat"], "MiB")
        hist = [r for r in m["results"] if r["kind"] == "train_history"]
        if hist:
            bar(
                f"training peak RSS with B={hist[0]['history_size']} history",
                hist[0]["peak_rss_gib"],
                "(reported)",
                True,
                "GiB",
            )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--only", nargs="+", choices=NAMES)
    a = p.parse_args(argv)
    selected = a.only or NAMES
    full = a.full
    load_before = load()
    t0 = time.perf_counter()
    results, seconds = {}, {}
    plan = {
        "ceiling": lambda: bench_ceiling.run((1, 2), 3),
        "train": lambda: bench_train.run(
            (64, 512) if full else (64,), (1, 2) if full else (1,), 3 if full else 2, 2000 if full else 1000
        ),
        "refine": lambda: bench_refine.run(n=1024, n_naive=128 if full else 64, repeats=3, variants=full, compile=True),
        "memory": lambda: bench_memory.run(
            (10_000, 100_000, 1_000_000) if full else (10_000, 100_000), 131_072, 1024 if full else 0
        ),
        "scaling": lambda: bench_scaling.run(
            (500, 1000, 2000) if full else (250, 500, 1000), (1000, 2000, 4000) if full else (500, 1000, 2000), 2
        ),
        "simulators": lambda: simulators(full),
        "importers": lambda: bench_importers.run(2000 if full else 1000, 3 if full else 2),
        "opencv": lambda: bench_opencv.run(1024 if full else 512, 256 if full else 128, 200 if full else 100, 5),
    }
    for name in NAMES:
        if name not in selected:
            continue
        print(f"\n=== {name} ===", flush=True)
        s = time.perf_counter()
        results[name] = plan[name]()
        seconds[name] = time.perf_counter() - s
    checks = bars(results)
    total = time.perf_counter() - t0
    print("\n=== bars ===")
    print(
        table(
            checks,
            [
                ("bar", "bar", "s"),
                ("value", "measured", ".3f"),
                ("unit", "", "s"),
                ("target", "target", "s"),
                ("pass", "pass", ""),
            ],
        )
    )
    print(
        f"total {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); load average {load_before[0]:.2f} -> {load()[0]:.2f}"
    )
    write_result(
        "summary",
        {
            "machine": machine(),
            "profile": "full" if full else "short",
            "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
            "load_before": load_before,
            "load_after": load(),
            "seconds": seconds,
            "total_s": total,
            "bars": checks,
        },
    )
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
