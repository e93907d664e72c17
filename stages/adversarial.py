"""Stage `adversarial@<task>`: Algorithm 1's loop (K_g refiner updates per K_d discriminator
updates, history buffer) from the pretrained checkpoint.

Outputs: models/<task>/refiner.pt (plain dict), plots/<task>/train_losses.csv (DVC plot),
reports/<task>/samples.png (synthetic | refined | real), reports/<task>/dvclive/ (dvclive log).

Interruptions: the running checkpoint lives in .simgan/checkpoints/ (outside DVC's outputs, which
DVC deletes before a rerun) under a name keyed by the training params and the pretrained model,
so after a kill -9 the next `dvc repro` resumes it and ends with the weights an uninterrupted run
would have; a changed param starts afresh instead of resuming someone else's run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

from simgan.config import ParamsError
from simgan.io import SimganError, write_text_atomic
from simgan.layout import refiner_path
from simgan.viz import save_image_grid
from stages.common import TASK_ARG, Params, check_task, run_stage
from stages.gan_setup import build_trainer

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
METRICS = LOG_COLUMNS[2:]  # the dvclive metrics: everything but the step and the phase


def run_checkpoint(task: str, p: Params, pretrained: Path) -> Path:
    h = hashlib.sha256()
    h.update(json.dumps(p.section(f"gan.{task}"), sort_keys=True).encode())
    h.update(pretrained.read_bytes())
    return Path(".simgan") / "checkpoints" / f"{task}-adversarial-{h.hexdigest()[:16]}.pt"


def losses_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
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


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.adversarial {TASK_ARG}")
    task = check_task(argv[0])
    p = Params.load()
    pretrained = Path("models") / task / "pretrained.pt"
    if not pretrained.exists():
        raise ParamsError(f"{pretrained}: file not found; run the pretrain@{task} stage first (dvc repro)")
    ckpt = run_checkpoint(task, p, pretrained)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        shutil.copyfile(pretrained, ckpt)
    trainer = build_trainer(task, p, checkpoint=ckpt)

    live_dir = Path("reports") / task / "dvclive"
    resumed_at = None
    with training_log(live_dir) as live:

        def on_log(row: dict) -> None:
            live.step = row["step"]
            for k, v in row.items():
                if k in METRICS:
                    live.log_metric(f"{task}/{k}", v)

        def on_sample(step: int, grids: dict) -> None:
            save_image_grid(Path("reports") / task / "samples.png", grids)

        trainer.on_log, trainer.on_sample = on_log, on_sample
        if trainer.maybe_resume():
            resumed_at = trainer.step
            print(f"adversarial {task}: resuming {ckpt} at step {resumed_at}", flush=True)
            for row in trainer.log:  # replay the restored history so the dvclive log is whole
                on_log(row)
        start, t0 = trainer.step, time.perf_counter()
        trainer.run()
        print(f"adversarial {task}: steps {start}-{trainer.step} in {time.perf_counter() - t0:.1f} s", flush=True)
    trainer.save_refiner(refiner_path(task), task=task)
    write_text_atomic(Path("plots") / task / "train_losses.csv", losses_csv(trainer.log))
    if trainer.on_sample and not trainer.cfg.sample_every:
        on_sample(trainer.step, trainer.sample_grids())
    ckpt.unlink(missing_ok=True)  # done: the buffer inside can be large


if __name__ == "__main__":
    run_stage(main, resumes=True)
