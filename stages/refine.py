"""Stage `refine@<task>`: the trained refiner applied to the whole synthetic set, streamed
HDF5 -> HDF5 with every label copied byte for byte -> data/<task>/refined.h5."""

from __future__ import annotations

from pathlib import Path

from simgan.config import ParamsError, positive
from simgan.refine import refine_dataset
from simgan.train import load_refiner
from stages.common import TASK_ARG, Params, check_task, data_path, device_param, run_stage


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.refine {TASK_ARG}")
    task = check_task(argv[0])
    p = Params.load()
    refiner, meta = load_refiner(Path("models") / task / "refiner.pt")
    n = refine_dataset(
        data_path(task, "synthetic"),
        data_path(task, "refined"),
        refiner,
        batch_size=p.get("refine.batch_size", int, positive),
        device=device_param(p, "refine.device"),
        bf16=p.get("refine.bf16", bool),
        channels_last=p.get("refine.channels_last", bool),
        extra_attrs={"refiner_steps": int(meta.get("steps", -1))},
    )
    print(f"refine {task}: {n} images -> {data_path(task, 'refined')}")


if __name__ == "__main__":
    run_stage(main)
