"""How the estimator stage should spend 2 cores on its seeds: one process with 2 torch threads
training the seeds one after another, or 2 single-thread worker processes (simgan.parallel.
map_processes, what stages/estimator.py does). Interleaved in one run; prints the ratio.

    .venv/bin/python -m benchmarks.bench_seeds [--steps 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os

import numpy as np
import torch

from benchmarks.common import interleaved, load, write_result
from simgan.estimators import train_estimator
from simgan.parallel import _set_threads, map_processes

SEEDS = [0, 1, 2, 3]
_ARGS: dict = {}


def _train(seed: int):
    return train_estimator(seed=seed, **_ARGS)[1]


def _data(n: int = 2000):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 35, 55), dtype=np.uint8)
    gaze = rng.normal(size=(n, 3)).astype(np.float32)
    return images, gaze / np.linalg.norm(gaze, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    images, gaze = _data()
    _ARGS.update(
        task="gaze",
        images=images,
        labels=gaze,
        steps=a.steps,
        batch_size=32,
        lr=1e-3,
        net_kwargs={"width": 0.5},
        bf16=True,
        channels_last=True,
    )
    torch.set_num_threads(1)  # the parent must not start a 2-thread pool before forking
    times = interleaved(
        {
            "2_workers_x_1_thread": lambda: list(map_processes(_train, SEEDS, workers=2, threads=1)),
            # the 2-thread layout in a fresh worker too, so both pay the same start-up
            "sequential_2_threads": _sequential_2_threads,
        },
        repeats=a.repeats,
        warmup=0,
    )
    med = {k: float(np.median(v)) for k, v in times.items()}
    ratio = med["sequential_2_threads"] / med["2_workers_x_1_thread"]
    print(
        f"{len(SEEDS)} gaze estimator seeds x {a.steps} steps (batch 32, width 0.5, bf16 + channels_last), load {os.getloadavg()[0]:.1f}"
    )
    for k, v in med.items():
        print(f"  {k:24s} {v:7.1f} s (median of {a.repeats})")
    print(f"  2 workers x 1 thread is {ratio:.2f}x the sequential 2-thread layout")
    write_result(
        "seeds",
        {"median_seconds": med, "x_sequential_2_threads": ratio, "steps": a.steps, "seeds": len(SEEDS), "load": load()},
    )


def _train_all(_):
    return [_train(s) for s in SEEDS]


def _sequential_2_threads():
    with mp.get_context("fork").Pool(1, initializer=_set_threads, initargs=(2,)) as pool:
        return pool.map(_train_all, [0])


if __name__ == "__main__":
    main()
