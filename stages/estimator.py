"""Stage `estimator@<variant>`: the downstream model of a task trained on one source at one
training-set size, once per whole-pipeline replicate (each seed k in `seeds`) ->
models/<task>/estimators/<variant>/seed<k>.pt.

A variant (params.yaml `variants`) names task, source (synthetic | refined | real), size (a
multiple of `estimator.<task>.base_n` images, the paper's 1x / 3x / 4x), whether photometric
augmentation is on (the baselines of issue 11) and `data`, the file or folder the stage depends
on (dvc.yaml cannot derive it from the source: data/<task>/<source>.h5, and for refined the
folder data/<task>/refined/ of the replicates' sets). Seed k draws the network's initial weights
and its batches from itself, and a refined variant's seed k trains on replicate k's refined set
(data/<task>/refined/seed<k>.h5), so each replicate pairs its refined and synthetic rows. The
training rows are the first size * base_n rows of the source file (files are in random order), so
4x contains 1x."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from simgan.augment import photometric_augment
from simgan.config import ParamsError, one_of, positive
from simgan.data.format import open_dataset
from simgan.estimators import EstimatorConfig, save_estimator, train_estimator
from simgan.io import write_text_atomic
from simgan.layout import refined_dir, refined_path
from simgan.parallel import StepBar, map_processes
from stages.common import (
    PAPER_TASKS,
    SOURCES,
    Params,
    compute_layout,
    data_path,
    data_task,
    pipeline_tasks,
    read_labels,
    run_stage,
    seeds_param,
)


def variant_data(task: str, source: str) -> str:
    """The `data` a variant of `task` trained on `source` declares: the dep path under data/."""
    return str(refined_dir(task).relative_to("data")) if source == "refined" else f"{task}/{source}.h5"


def variant(p: Params, name: str) -> dict:
    key = f"variants.{name}"
    v = {
        "task": p.get(f"{key}.task", str, one_of(*pipeline_tasks(p))),
        "source": p.get(f"{key}.source", str, one_of(*SOURCES)),
        "size": p.get(f"{key}.size", int, positive),
        "augment": p.get(f"{key}.augment", bool, default=False),
    }
    # dvc.yaml's dep data/${item.data}: a wrong one would let a changed training set go unnoticed
    p.get(f"{key}.data", str, one_of(variant_data(v["task"], v["source"])))
    if v["task"] not in PAPER_TASKS and v["augment"]:
        raise ParamsError(
            f"{p.path}: key '{key}.augment': expected false for the user task {v['task']!r} "
            f"(photometric augmentation is defined for gaze and hand only)"
        )
    return v


def training_file(task: str, source: str, seed: int) -> Path:
    """The file seed (replicate) `seed` of a variant trains on."""
    return refined_path(task, seed) if source == "refined" else data_path(task, source)


def training_rows(p: Params, task: str, source: str, size: int, base_n: int | None, seed: int):
    if base_n is None:
        raise ParamsError(f"{p.path}: key 'estimator.{task}.base_n': missing")
    n = base_n * size
    path = training_file(task, source, seed)
    with open_dataset(path, require_labels=True) as ds:
        if ds.n < n:
            raise ParamsError(
                f"{p.path}: key 'estimator.{task}.base_n': {size}x needs {n} images but {path} has {ds.n}; "
                f"expected base_n <= {ds.n // size} or a larger data.{task} set"
            )
        labels, columns = read_labels(ds, task, slice(0, n))
        return ds.read([ds.image_key], slice(0, n))[ds.image_key], labels, columns


# The training call of this stage and each seed's training rows; forked workers inherit them, so
# neither the images (up to ~75 MB per set) nor the augmentation closure (not picklable) cross a pipe.
_TRAIN = None
_ROWS: dict = {}


def _train_seed(seed: int):
    t0 = time.perf_counter()
    model, history = _TRAIN(*_ROWS[seed][:2], seed=seed, columns=_ROWS[seed][2])
    # a CUDA tensor cannot cross the pipe back from a forked worker; the time goes to stdout, not
    # into history.json (a tracked output: a wall-clock value made every rerun a new file)
    return model.cpu(), history, time.perf_counter() - t0


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError("usage: python -m stages.estimator VARIANT (a key of params.yaml 'variants')")
    name = argv[0]
    p = Params.load()
    v = variant(p, name)
    task = v["task"]
    seeds = seeds_param(p)
    cfg = EstimatorConfig.from_params(p, task)
    # one read per distinct file: synthetic and real variants share theirs over the seeds
    files = {seed: training_file(task, v["source"], seed) for seed in seeds}
    by_file = {f: training_rows(p, task, v["source"], v["size"], cfg.base_n, seed) for seed, f in files.items()}
    global _TRAIN, _ROWS
    _ROWS = {seed: by_file[f] for seed, f in files.items()}
    n_images = len(_ROWS[seeds[0]][0])
    augment = photometric_augment(task, cfg.augment) if v["augment"] else None
    out_dir = Path("models") / task / "estimators" / name
    threads, workers = compute_layout(p)
    device = cfg.device
    if device != "cpu":
        workers = 1  # CUDA does not survive a fork: on a GPU the seeds take turns in this process
    print(
        f"estimator {name}: {len(seeds)} seeds x {n_images} {v['source']} images, {workers} worker(s) x {threads} thread(s) on {device}",
        flush=True,
    )
    # the bar over every seed's steps: the forked workers count each step (a shared counter, no
    # random draw, so the weights are those trained without it) and this process draws it
    progress = StepBar(len(seeds) * cfg.steps, f"estimator {name}")
    _TRAIN = partial(train_estimator, data_task(task), config=cfg, augment=augment, on_step=progress.step)
    history = {}
    with progress:
        bar = progress.bar
        for seed, (model, hist, seconds) in map_processes(_train_seed, seeds, workers, threads, poll=progress.sync):
            save_estimator(
                out_dir / f"seed{seed}.pt",
                model,
                {**v, "seed": seed, "variant": name, "train_n": n_images, "train_file": str(files[seed])},
            )
            history[str(seed)] = hist
            bar.set_postfix_str(f"{len(history)}/{len(seeds)} seeds", refresh=False)
            bar.write(f"estimator {name}: seed {seed} done in {seconds:.1f} s, final loss {hist[-1]['loss']:.4g}")
    history = {str(s): history[str(s)] for s in seeds}  # seed order, whatever order they finished in
    write_text_atomic(out_dir / "history.json", json.dumps(history, indent=1) + "\n")


if __name__ == "__main__":
    run_stage(main)
