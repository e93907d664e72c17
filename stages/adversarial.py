"""Stage `adversarial@<task>`: Algorithm 1's loop (K_g refiner updates per K_d discriminator
updates, history buffer), once per whole-pipeline replicate k of params.yaml `seeds`, each from
its pretrained checkpoint models/<task>/pretrained/seed<k>.pt, side by side in `compute.workers`
single-thread processes.

Outputs, per replicate k: models/<task>/refiners/seed<k>.pt (plain dict),
plots/<task>/train_losses/seed<k>.csv (DVC plots), reports/<task>/samples/seed<k>.png
(synthetic | refined | real), reports/<task>/dvclive/seed<k>/ (dvclive log).

Interruptions: each replicate's running checkpoint lives in .simgan/checkpoints/ (outside DVC's
outputs, which DVC deletes before a rerun) under a name keyed by the training params, the
replicate and its pretrained model (stages.common.run_checkpoint), so after a kill -9 the next
`dvc repro` resumes every replicate and ends with the weights an uninterrupted run would have; a
changed param starts afresh instead of resuming someone else's run.
"""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

from simgan.config import ParamsError
from simgan.io import SimganError, copy_file_atomic, write_text_atomic
from simgan.layout import pretrained_path, refiner_path, replicate_file
from simgan.viz import save_image_grid
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

# train_losses.csv's columns: what the params and seeds determine, so a rerun writes the same file
# (the report stage reads it); the training time goes to stdout. A row of a checkpoint written
# before the log held no wall-clock time still carries `seconds`: it is left out.
LOG_COLUMNS = [
    "step",
    "phase",
    "loss_refiner_adv",
    "loss_refiner_reg",
    "loss_disc",
    "disc_acc_real",
    "disc_acc_refined",
    "refined_change",
]
# Terms an option adds (train.nce's loss_refiner_nce, train.r1's r1_penalty) follow these columns.
NOT_LOGGED = ("step", "phase", "seconds")


def log_columns(rows: list[dict]) -> list[str]:
    """LOG_COLUMNS, then any other term the rows carry, in the order it first appears."""
    extra = dict.fromkeys(k for r in rows for k in r if k not in LOG_COLUMNS and k not in NOT_LOGGED)
    return LOG_COLUMNS + list(extra)


def losses_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=log_columns(rows), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def training_log(live_dir: Path):
    """The dvclive logger of the training curves (DVC's own logger: `dvc plots` reads its files).

    dvclive reads the git revision on start and fails with a bare "Empty git repo" in a repository
    without a commit (dvclive issue #522): say what to do instead, before any training is spent."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, resume=False)
    except SCMError as e:
        raise SimganError(
            f"{live_dir}: dvclive could not read the git repository ({e}); it needs at least one "
            f"commit: run `git add -A && git commit -m init`, then `dvc repro` again"
        ) from None


def losses_dir(task: str) -> Path:
    """plots/<task>/train_losses/: one training-curve CSV per replicate (seed<k>.csv)."""
    return Path("plots") / task / "train_losses"


def adversarial_replicate(task: str, seed: int) -> Path:
    """Train replicate `seed`'s GAN to the end; writes its refiner, losses, samples and dvclive log."""
    p = Params.load()
    pretrained = pretrained_path(task, seed)
    if not pretrained.exists():
        raise ParamsError(f"{pretrained}: file not found; run the pretrain@{task} stage first (dvc repro)")
    ckpt = replicate_checkpoint("adversarial", task, p, seed, pretrained)
    if not ckpt.exists():
        copy_file_atomic(pretrained, ckpt)
    trainer = build_trainer(task, p, checkpoint=ckpt, progress=False, replicate=seed)
    samples = replicate_file(Path("reports") / task / "samples", seed, ".png")

    with training_log(replicate_file(Path("reports") / task / "dvclive", seed, "")) as live:

        def on_log(row: dict) -> None:
            live.step = row["step"]
            for k, v in row.items():
                if k not in NOT_LOGGED:
                    live.log_metric(f"{task}/{k}", v)

        def on_sample(step: int, grids: dict) -> None:
            save_image_grid(samples, grids)

        trainer.on_log, trainer.on_sample, trainer.on_step = on_log, on_sample, replicate_steps
        trainer.maybe_resume()
        done = trainer.step - trainer.cfg.adversarial_start  # adversarial steps already trained
        if done > 0:  # not the pretrained copy
            print(f"adversarial {task}: seed {seed} resumes {ckpt} at step {trainer.step}", flush=True)
            replicate_steps(done)
        for row in trainer.log:  # replay the restored history so the dvclive log is whole
            on_log(row)
        trainer.run(resume=False)
    out = refiner_path(task, seed)
    trainer.save_refiner(out, task=task, replicate=seed)
    write_text_atomic(replicate_file(losses_dir(task), seed, ".csv"), losses_csv(trainer.log))
    # the final samples also when no step ran here (a finished replicate's checkpoint, reused)
    save_image_grid(samples, trainer.sample_grids())
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.adversarial {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    seeds = seeds_param(p)
    steps = train_config(task, p).steps
    run_replicates(f"adversarial {task}", partial(adversarial_replicate, task), seeds, p, steps=steps)
    # the finished checkpoints stay: a replicate is not trained again when `seeds` gains another
    keep = [replicate_checkpoint("adversarial", task, p, seed, pretrained_path(task, seed)) for seed in seeds]
    prune_checkpoints("adversarial", task, keep)


if __name__ == "__main__":
    run_stage(main, resumes=True)
