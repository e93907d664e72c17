"""Stage `refine@<task>`: the trained refiner applied to the whole synthetic set, streamed
HDF5 -> HDF5 with every label copied byte for byte -> data/<task>/refined.h5."""

from __future__ import annotations

from pathlib import Path

from simgan.config import ParamsError, bf16_setting, non_negative, positive
from simgan.refine import refine_dataset
from simgan.train import load_checkpoint, load_refiner
from stages.common import TASK_ARG, Params, check_task, data_path, device_param, run_stage


def refine_settings(task: str, root: str | Path = ".") -> dict:
    """src, dst, refiner (checkpoint path) and refine_dataset's keyword arguments from params.yaml's
    `refine` section: one reading for this stage, the Dask-sharded refinement
    (stages/refine_sharded.py) and the Prefect flow's, so all three write the same file. Paths are
    under `root`; `refined_from` is the source as the stage names it."""
    root = Path(root)
    p = Params.load(root / "params.yaml")
    refiner = root / "models" / task / "refiner.pt"
    steps = int(load_checkpoint(refiner).get("steps", -1))
    return dict(
        src=str(root / data_path(task, "synthetic")),
        dst=str(root / data_path(task, "refined")),
        refiner=str(refiner),
        batch_size=p.get("refine.batch_size", int, positive),
        device=device_param(p, "refine.device"),
        bf16=p.get("refine.bf16", (bool, str), bf16_setting),
        channels_last=p.get("refine.channels_last", bool),
        compile=p.get("refine.compile", bool, default=False),
        noise_seed=p.get("refine.seed", int, non_negative, default=0),
        extra_attrs={"refiner_steps": steps, "refined_from": str(data_path(task, "synthetic"))},
    )


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.refine {TASK_ARG}")
    task = check_task(argv[0])
    s = refine_settings(task)
    refiner, _ = load_refiner(s.pop("refiner"))
    dst = s.pop("dst")
    n = refine_dataset(s.pop("src"), dst, refiner, **s)
    print(f"refine {task}: {n} images -> {dst}")


if __name__ == "__main__":
    run_stage(main)
