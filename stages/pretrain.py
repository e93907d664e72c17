"""Stage `pretrain@<task>`: Algorithm 1's start -- the refiner on self-regularization alone
(gaze: 1000 steps in the paper), then the discriminator alone (200 steps) -> models/<task>/pretrained.pt
(a full trainer checkpoint, so the adversarial stage continues from it exactly)."""

from __future__ import annotations

from pathlib import Path

from simgan.config import ParamsError
from stages.common import TASK_ARG, Params, check_task, run_stage
from stages.gan_setup import build_trainer


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.pretrain {TASK_ARG}")
    task = check_task(argv[0])
    out = Path("models") / task / "pretrained.pt"
    trainer = build_trainer(task, Params.load(), checkpoint=out, steps=0)  # pretraining phases only
    trainer.run()


if __name__ == "__main__":
    run_stage(main)
