"""Stage `pretrain@<task>`: Algorithm 1's start -- the refiner on self-regularization alone
(gaze: 1000 steps in the paper), then the discriminator alone (200 steps) -- once per
whole-pipeline replicate (each seed k of params.yaml `seeds`, GAN seed gan.<task>.train.seed + k)
-> models/<task>/pretrained/seed<k>.pt (full trainer checkpoints, so the adversarial stage
continues from each exactly).

The replicates train side by side in `compute.workers` single-thread processes. Each keeps its
checkpoint in .simgan/checkpoints/ (stages.common.run_checkpoint), so after a kill -9 the next
`dvc repro` resumes every replicate where it stopped, and a replicate already trained is reused
when `seeds` gains another."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from simgan.config import ParamsError
from simgan.io import copy_file_atomic
from simgan.layout import pretrained_path
from stages.common import (
    TASK_ARG,
    Params,
    check_task,
    prune_checkpoints,
    replicate_steps,
    run_replicates,
    run_stage,
    seeds_param,
)
from stages.gan_setup import build_trainer, replicate_checkpoint, train_config


def pretrain_replicate(task: str, seed: int) -> Path:
    p = Params.load()
    ckpt = replicate_checkpoint("pretrain", task, p, seed)
    # steps=0: the pretraining phases only
    trainer = build_trainer(task, p, checkpoint=ckpt, progress=False, steps=0, replicate=seed)
    trainer.on_step = replicate_steps
    if trainer.maybe_resume():
        replicate_steps(trainer.step)  # the steps done before the interruption count on the bar
    trainer.run(resume=False)
    out = pretrained_path(task, seed)
    copy_file_atomic(ckpt, out)
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.pretrain {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    seeds = seeds_param(p)
    steps = train_config(task, p).adversarial_start  # the pretraining phases' steps
    run_replicates(f"pretrain {task}", partial(pretrain_replicate, task), seeds, p, steps=steps)
    # the finished checkpoints stay: a replicate is not trained again when `seeds` gains another
    prune_checkpoints("pretrain", task, [replicate_checkpoint("pretrain", task, p, seed) for seed in seeds])


if __name__ == "__main__":
    run_stage(main, resumes=True)
