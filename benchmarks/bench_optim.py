"""Training steps with the fused Adam (simgan.optim.adam) against the per-tensor Adam.

    .venv/bin/python -m benchmarks.bench_optim [--steps 60] [--repeats 5] [--threads 1]

Each case trains from the same initial weights on the same batches twice per repeat, once with
each optimizer, interleaved; the printed ratio is per-tensor median / fused median (> 1: fused is
faster). Cases are the pipeline's CPU defaults (params.yaml): the gaze estimator (GazeNet width
0.5, batch 32), the hand estimator (2-stack hourglass, 16 channels, batch 32, +-20 deg rotation)
and one adversarial step of the gaze GAN (refiner 32 ch / 4 blocks, K_g = 2, K_d = 1). Images come
from the embedded simulators, so no data files are needed. The final losses of the two paths are
printed too: they differ only in rounding.
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch

from benchmarks.common import interleaved, load, machine, summary, table, threads, write_result
from simgan import estimators, optim, train
from simgan.estimators import training as estimator_training
from simgan.sim.eyes import render_eyes
from simgan.sim.hands import render_hands


def per_tensor_adam(params, lr, betas=(0.9, 0.999)):
    """The baseline: torch's default Adam on the CPU (one kernel per tensor and operation)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), foreach=False)


def estimator_case(task: str, steps: int):
    if task == "gaze":
        d = render_eyes(2000, seed=0, domain="synthetic", workers=1)
        images, labels, kw = d["images"], d["gaze"], dict(lr=0.001, net_kwargs={"width": 0.5})
    else:
        d = render_hands(1000, seed=0, domain="synthetic", size=64, workers=1)
        images, labels = d["depth"], d["joints"]
        kw = dict(
            lr=0.006,
            lr_schedule="cosine",
            rotation_deg=20.0,
            net_kwargs={
                "stacks": 2,
                "channels": 16,
                "in_size": 64,
                "heatmap_size": 16,
                "depth": 2,
                "sigma": 1.0,
                "heatmap_loss": "softmax",
            },
        )
    losses = {}

    def run(name):
        _, hist = estimators.train_estimator(
            task, images, labels, steps=steps, batch_size=32, seed=0, bf16=True, channels_last=True, **kw
        )
        losses[name] = hist[-1]["loss"]

    return run, losses, steps * 32


def gan_case(steps: int):
    from simgan.data.format import images_to_tensor

    synthetic = images_to_tensor(render_eyes(1000, seed=0, domain="synthetic", workers=1)["images"], "gaze")
    real = images_to_tensor(render_eyes(1000, seed=1, domain="real", workers=1)["images"], "gaze")
    cfg = train.TrainConfig(
        batch_size=32,
        k_g=2,
        k_d=1,
        lr=2e-4,
        betas=(0.5, 0.999),
        lam=10.0,
        history_size=640,
        seed=0,
        bf16=True,
        channels_last=True,
        pretrain_refiner_steps=0,
        pretrain_discriminator_steps=0,
        steps=steps,
    )
    losses = {}

    def run(name):
        r, d, _, _ = train.build_networks(
            "gaze",
            "cpu",
            seed=0,
            refiner={"channels": 32, "blocks": 4, "kernel": 3, "residual": True, "padding_mode": "replicate"},
            discriminator={"width": 1.0},
        )
        trainer = train.SimGANTrainer(r, d, synthetic, real, cfg, progress=False)
        for _ in range(steps):
            row = trainer.train_step()
        losses[name] = row["loss_refiner_adv"]

    return run, losses, steps * 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["gaze_estimator", "hand_estimator", "gaze_gan"])
    args = ap.parse_args()
    load_before = load()
    rows = []
    with threads(args.threads):
        for case in args.cases:
            if case == "gaze_gan":
                run, losses, work = gan_case(args.steps)
            else:
                run, losses, work = estimator_case(case.split("_")[0], args.steps)

            def with_optimizer(name, make):
                # the training loops build their Adam through simgan.optim.adam, imported by name
                def call():
                    with mock.patch.object(estimator_training, "adam", make), mock.patch.object(train, "adam", make):
                        run(name)

                return call

            times = interleaved(
                {
                    "per_tensor": with_optimizer("per_tensor", per_tensor_adam),
                    "fused": with_optimizer("fused", optim.adam),
                },
                args.repeats,
            )
            s_base, s_fused = summary(times["per_tensor"], work), summary(times["fused"], work)
            rows.append(
                {
                    "case": case,
                    "steps": args.steps,
                    "per_tensor_s": s_base["median_s"],
                    "fused_s": s_fused["median_s"],
                    "x_per_tensor": s_base["median_s"] / s_fused["median_s"],
                    "loss_per_tensor": losses["per_tensor"],
                    "loss_fused": losses["fused"],
                    "all_per_tensor_s": times["per_tensor"],
                    "all_fused_s": times["fused"],
                }
            )
            print(
                table(
                    rows[-1:],
                    [
                        ("case", "case", "s"),
                        ("steps", "steps", "d"),
                        ("per_tensor_s", "per-tensor s", ".2f"),
                        ("fused_s", "fused s", ".2f"),
                        ("x_per_tensor", "fused vs per-tensor", ".2f"),
                        ("loss_per_tensor", "loss (per-tensor)", ".5g"),
                        ("loss_fused", "loss (fused)", ".5g"),
                    ],
                ),
                flush=True,
            )
    path = write_result(
        "optim",
        {
            "machine": machine(),
            "threads": args.threads,
            "repeats": args.repeats,
            "load_before": load_before,
            "load_after": load(),
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
