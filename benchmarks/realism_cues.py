"""Which cues the realism classifier reads: the evaluate stage's classifier (simgan.metrics.
realism_accuracy) on real eyes against synthetic or refined ones, after transforms that take a
cue away from both sides. A diagnosis of issue 20's realism target, not a speed benchmark.

    python -m benchmarks.realism_cues [--replicate 0] [--n 1000] [--out benchmarks/results/realism_cues_gaze.json]

Run from the repository root after `dvc repro refine@gaze` (it reads data/gaze/{synthetic,real}.h5
and data/gaze/refined/seed<replicate>.h5). Rows:
- real vs real: two disjoint draws of real eyes, the floor (50 = indistinguishable);
- pose only: a 15-nearest-neighbour classifier on the labels alone (gaze pitch and yaw, head
  pitch, yaw and roll, standardized), synthetic vs real, 70/30 split: how far the simulator's pose
  distribution alone gives an image away, since a label-keeping refiner cannot change it;
- pose-matched: each real eye paired with the synthetic row of the nearest pose, without
  replacement, so both sides have the real pose distribution; then the images as they are, each
  side histogram-equalized, and equalized then box-blurred (`--blur` px), which leaves only
  low-frequency content (no sensor noise, pores, lash strands, JPEG blocks).
Every classifier uses the evaluate stage's settings (params.yaml evaluate.gaze realism_steps,
seed = the replicate)."""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import machine
from simgan.config import Params
from simgan.data.format import open_dataset
from simgan.io import write_json_atomic
from simgan.metrics import pose_matched_rows, realism_accuracy
from simgan.sim.eyes import equalize_histograms, gaze_angles


def _read(path: str) -> dict:
    with open_dataset(path, require_labels=False) as ds:
        return ds.read(None)


def pose(data: dict) -> np.ndarray:
    """(N, 5): gaze pitch, yaw and head pitch, yaw, roll in degrees."""
    return np.concatenate([gaze_angles(data["gaze"]), data["head_pose"]], axis=1)


def pose_only_accuracy(pose_a: np.ndarray, pose_b: np.ndarray, seed: int, k: int = 15) -> float:
    """% of held-out rows a k-NN on standardized poses assigns to the right side (a vs b)."""
    n = min(len(pose_a), len(pose_b))
    mu, sd = pose_a.mean(0), pose_a.std(0)
    x = (np.concatenate([pose_a[:n], pose_b[:n]]) - mu) / sd
    y = np.r_[np.zeros(n), np.ones(n)]
    perm = np.random.default_rng(seed).permutation(2 * n)
    cut = int(0.7 * 2 * n)
    tr, te = perm[:cut], perm[cut:]
    d = ((x[te, None] - x[None, tr]) ** 2).sum(-1)
    votes = y[tr][np.argsort(d, axis=1)[:, :k]].mean(1)
    return float(100 * ((votes > 0.5) == y[te]).mean())


def box_blur(images: np.ndarray, k: int) -> np.ndarray:
    x = torch.from_numpy(images.astype(np.float32))[:, None]
    x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, 1)
    return x[:, 0].round().clamp(0, 255).numpy().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicate", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000, help="real eyes per classifier (evaluate: realism_n)")
    ap.add_argument("--blur", type=int, default=9, help="box blur size in px (odd)")
    ap.add_argument("--out", default="benchmarks/results/realism_cues_gaze.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = Params.load().get("evaluate.gaze.realism_steps", int, default=200)
    syn, real = _read("data/gaze/synthetic.h5"), _read("data/gaze/real.h5")
    refined = _read(f"data/gaze/refined/seed{args.replicate}.h5")
    n, seed = args.n, args.replicate
    r, r2 = real["images"][:n], real["images"][n : 2 * n]
    rows = pose_matched_rows(pose(syn), pose(real)[:n])

    def acc(a, b) -> float:
        return realism_accuracy(a, b, "gaze", seed=seed, steps=steps)

    def eq_blur(x):
        return box_blur(equalize_histograms(x), args.blur)

    table = [("real vs real (floor)", acc(r, r2))]
    table.append(
        ("pose only (15-NN on the labels), synthetic vs real", pose_only_accuracy(pose(syn), pose(real), seed))
    )
    for name, other in (("synthetic", syn["images"]), (f"refined (replicate {seed})", refined["images"])):
        table.append((f"{name}, as rendered", acc(r, other[:n])))
        m = other[rows]
        table.append((f"{name}, pose-matched", acc(r, m)))
        table.append((f"{name}, pose-matched, both equalized", acc(equalize_histograms(r), equalize_histograms(m))))
        table.append((f"{name}, pose-matched, both equalized + blur {args.blur}", acc(eq_blur(r), eq_blur(m))))
    print("| classifier input | accuracy % |\n|---|---:|")
    for name, value in table:
        print(f"| {name} | {value:.1f} |")
    write_json_atomic(
        args.out,
        {"machine": machine(), "replicate": seed, "n": n, "blur": args.blur, "rows": dict(table)},
    )


if __name__ == "__main__":
    main()
