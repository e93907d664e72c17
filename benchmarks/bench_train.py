"""Adversarial training step (images/s) at the paper's gaze networks: project vs naive baseline.

    .venv/bin/python -m benchmarks.bench_train [--batches 64 [512]] [--threads 1 2] [--repeats 3]
        [--n-images 2000]

One step = one iteration of Algorithm 1 in its adversarial phase: K_g = 2 refiner updates and
K_d = 1 discriminator update with the history buffer; images/s = batch size / step time.
project: SimGANTrainer as the stages run it, `bf16: auto` (bf16 autocast where oneDNN has AMX
         kernels, fp32 elsewhere) + channels_last, uint8 images held in memory.
naive:   the same algorithm, networks, losses and initial weights as a public port runs it: eager
         fp32 NCHW, every batch decoded from PNG files on disk with Pillow.
FLOPs per step are counted by torch's FLOP counter on the real step (forward and backward), and
compared with the matmul ceiling, in the precision `auto` picks, measured interleaved with the steps.
Batch 512 is tens of seconds per step on 2 cores: pass it explicitly (few repeats).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import (
    bench_device,
    ceiling_fns,
    counted_flops,
    interleaved,
    load,
    machine,
    pop_ceiling,
    project_dtype,
    summary,
    table,
    threads,
    write_result,
)
from simgan.history import HistoryBuffer
from simgan.losses import discriminator_loss, refiner_loss
from simgan.nets import Discriminator, Refiner, discriminator_preset, refiner_preset
from simgan.train import SimGANTrainer, TrainConfig


def make_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    from simgan.sim.eyes import render_eyes

    return render_eyes(n, seed=0, domain="synthetic", workers=1)["images"], render_eyes(
        n, seed=1, domain="real", workers=1
    )["images"]


def write_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"{i:06d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


class NaiveTrainer:
    """Algorithm 1 as the public ports wrote it: fp32, NCHW, a batch decoded from PNG files at
    every update. Same losses, optimiser and history semantics as SimGANTrainer, so the two do
    the same arithmetic and differ only in how."""

    def __init__(
        self, refiner, discriminator, synthetic: list[Path], real: list[Path], cfg: TrainConfig, device: torch.device
    ):
        self.r, self.d = refiner.to(device), discriminator.to(device)
        self.synthetic, self.real, self.cfg, self.device = synthetic, real, cfg, device
        self.opt_r = torch.optim.Adam(self.r.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.buffer = HistoryBuffer(cfg.history_size, (1, 35, 55), dtype=torch.float32, device=device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)

    def load(self, paths: list[Path], n: int) -> torch.Tensor:
        idx = self.rng.integers(0, len(paths), n)
        arr = np.stack([np.asarray(Image.open(paths[i]).convert("L")) for i in idx])
        return torch.from_numpy(arr).float().div(127.5).sub(1.0).unsqueeze(1).to(self.device)

    def train_step(self) -> None:
        b, half = self.cfg.batch_size, self.cfg.batch_size // 2
        for _ in range(self.cfg.k_g):
            x = self.load(self.synthetic, b)
            self.d.requires_grad_(False)
            refined = self.r(x)
            total, _, _ = refiner_loss(self.d(refined), refined, x, self.cfg.lam)
            self.opt_r.zero_grad()
            total.backward()
            self.opt_r.step()
            self.d.requires_grad_(True)
        for _ in range(self.cfg.k_d):
            use_history = len(self.buffer) > 0
            x = self.load(self.synthetic, b - half if use_history else b)
            real = self.load(self.real, b)
            with torch.no_grad():
                current = self.r(x)
            fake = torch.cat([current, self.buffer.sample(half, self.generator)]) if use_history else current
            loss = discriminator_loss(self.d(fake), self.d(real))
            self.opt_d.zero_grad()
            loss.backward()
            self.opt_d.step()
            self.buffer.add(current[: b - half], self.generator)


def config(batch: int, device: torch.device, fast: bool) -> TrainConfig:
    return TrainConfig(
        steps=10**6,
        pretrain_refiner_steps=0,
        pretrain_discriminator_steps=0,
        batch_size=batch,
        history_size=max(6400, batch),
        device=str(device),
        bf16="auto" if fast else False,
        channels_last=fast,
    )


def nets(seed: int = 0) -> tuple[Refiner, Discriminator]:
    torch.manual_seed(seed)
    return Refiner(**refiner_preset("gaze", "paper")), Discriminator(**discriminator_preset("gaze", "paper"))


def flops_per_image(syn_u8: torch.Tensor, real_u8: torch.Tensor, device: torch.device, batch: int = 8) -> int:
    """Counted on a small-batch step once the history buffer is in use (the steady state): every
    convolution's cost is linear in the batch, so per image it holds for any batch size."""
    r, d = nets()
    t = SimGANTrainer(r, d, syn_u8, real_u8, config(batch, device, True), progress=False)
    t.train_step()
    return counted_flops(t.train_step) // batch


def run(batches=(64,), thread_counts=(1, 2), repeats: int = 3, n_images: int = 2000, repeats_large: int = 2) -> dict:
    device = bench_device()
    load_before = load()
    syn, real = make_images(n_images)
    syn_u8, real_u8 = torch.from_numpy(syn).unsqueeze(1), torch.from_numpy(real).unsqueeze(1)
    per_image = flops_per_image(syn_u8, real_u8, device)
    dtype = project_dtype(device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        syn_png, real_png = write_pngs(syn, Path(tmp) / "synthetic"), write_pngs(real, Path(tmp) / "real")
        for batch in batches:
            for n_threads in thread_counts:
                with threads(n_threads):
                    r, d = nets()
                    project = SimGANTrainer(
                        copy.deepcopy(r), copy.deepcopy(d), syn_u8, real_u8, config(batch, device, True), progress=False
                    )
                    naive = NaiveTrainer(r, d, syn_png, real_png, config(batch, device, False), device)
                    # warm-up: fills the history buffer (the steady-state D batch) and lets oneDNN
                    # pick kernels for every shape
                    times = interleaved(
                        {"project": project.train_step, "naive": naive.train_step, **ceiling_fns(device, dtype)},
                        repeats_large if batch > 128 else repeats,
                    )
                ceiling = pop_ceiling(times)["gflops"]
                got = {}
                for name, t in times.items():
                    s = summary(t, batch)
                    gflops = s["per_s"] * per_image / 1e9
                    got[name] = {
                        "path": name,
                        "batch": batch,
                        "threads": n_threads,
                        "step_s": s["median_s"],
                        "all_s": s["all_s"],
                        "images_per_s": s["per_s"],
                        "gflops": gflops,
                        "fraction_of_ceiling": gflops / ceiling,
                        "ceiling_gflops": ceiling,
                    }
                got["project"]["x_naive"] = got["project"]["images_per_s"] / got["naive"]["images_per_s"]
                got["naive"]["x_naive"] = 1.0
                rows += [got["project"], got["naive"]]
                print(
                    f"batch {batch}, {n_threads} thread(s): project {got['project']['step_s']:.2f} s/step, naive {got['naive']['step_s']:.2f} s/step "
                    f"-> {got['project']['x_naive']:.2f}x (load {load()[0]:.1f})",
                    flush=True,
                )
    report = {
        "machine": machine(),
        "device": str(device),
        "load_before": load_before,
        "load_after": load(),
        "repeats": repeats,
        "repeats_large": repeats_large,
        "n_images": n_images,
        "flops_per_image_per_step": per_image,
        "results": rows,
    }
    print(
        f"adversarial step (K_g=2, K_d=1), paper gaze R and D: {per_image / 1e9:.2f} GFLOP per image per step (counted)"
    )
    print(
        table(
            rows,
            [
                ("path", "path", "s"),
                ("batch", "batch", "d"),
                ("threads", "threads", "d"),
                ("step_s", "s/step", ".2f"),
                ("images_per_s", "img/s", ".1f"),
                ("gflops", "GFLOP/s", ".1f"),
                ("fraction_of_ceiling", "of ceiling", ".2f"),
                ("x_naive", "x naive", ".2f"),
            ],
        )
    )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result("train", report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-large", type=int, default=2, help="timed steps at batch > 128")
    p.add_argument("--n-images", type=int, default=2000)
    a = p.parse_args(argv)
    run(tuple(a.batches), tuple(a.threads), a.repeats, a.n_images, a.repeats_large)
    return 0


if __name__ == "__main__":
    sys.exit(main())
