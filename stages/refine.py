"""Stage `refine@<task>`: each replicate's trained refiner applied to the whole synthetic set,
streamed HDF5 -> HDF5 with every label copied byte for byte -> data/<task>/refined/seed<k>.h5,
one per seed k of params.yaml `seeds`, side by side in `compute.workers` single-thread processes."""

from __future__ import annotations

from functools import partial

from simgan.checkpoint import load_refiner
from simgan.config import ParamsError
from simgan.refine import refine_dataset, refine_settings
from stages.common import TASK_ARG, Params, check_task, run_replicates, run_stage, seeds_param


def refine_replicate(task: str, seed: int) -> int:
    s = refine_settings(Params.load(), task, seed)
    refiner, _ = load_refiner(s.pop("refiner"), task)
    return refine_dataset(s.pop("src"), s.pop("dst"), refiner, progress=False, **s)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.refine {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    seeds = seeds_param(p)
    for seed, n in run_replicates(f"refine {task}", partial(refine_replicate, task), seeds, p).items():
        print(f"refine {task}: {n} images -> {refine_settings(p, task, seed)['dst']}")


if __name__ == "__main__":
    run_stage(main)
