"""Stage `refine@<task>`: the trained refiner applied to the whole synthetic set, streamed
HDF5 -> HDF5 with every label copied byte for byte -> data/<task>/refined.h5."""

from __future__ import annotations

from simgan.checkpoint import load_refiner
from simgan.config import ParamsError
from simgan.refine import refine_dataset, refine_settings
from stages.common import TASK_ARG, Params, check_task, run_stage


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.refine {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    s = refine_settings(p, task)
    refiner, _ = load_refiner(s.pop("refiner"), task)
    dst = s.pop("dst")
    n = refine_dataset(s.pop("src"), dst, refiner, **s)
    print(f"refine {task}: {n} images -> {dst}")


if __name__ == "__main__":
    run_stage(main)
