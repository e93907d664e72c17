"""Scale-out: sharded refinement on a Dask cluster, and estimator training under torchrun (DDP).

Sharded refinement. `plan_shards` cuts a file's rows at its chunk boundaries, `refine_shard`
refines one slice into its own file (`simgan.refine.refine_dataset(rows=...)`, which keeps the
source's chunking), and `combine_shards` concatenates the shard files in row order into one file.
Because every shard starts on a chunk boundary, each chunk meets the refiner exactly as in the
single-process run, so the combined file is byte-identical, key by key, to
`refine_dataset(src, dst, refiner)`. `refine_sharded` runs the three on a `distributed.Client`;
the Prefect flow (flows/pipeline.py) runs the same functions as tasks on prefect-dask's
DaskTaskRunner. Shard files live next to `dst`, so on a multi-machine cluster `dst`'s folder must
be on storage every worker sees.

Data-parallel training. `simgan.estimators.train_estimator` is one loop for one process and for
DDP: inside a torch.distributed process group every rank draws the same batch indices and the
same augmentations from the shared seed (so the random streams match the one-process run), then
computes the loss on its own slice of the batch, scaled so that DDP's gradient average equals the
gradient of the whole batch's mean loss. Entry point for torchrun, with the settings of
params.yaml's `estimator.<task>` (simgan.estimators.EstimatorConfig, as the estimator stage):

    torchrun --standalone --nproc_per_node 2 -m simgan.distributed train-estimator --task gaze \
        --data data/gaze/refined.h5 --rows 4000 --seed 0 --out models/gaze/ddp/seed0.pt

and the same arguments after `python -m simgan.distributed` run it as one process (the weights of
train_estimator, bit for bit). Rank 0 alone writes the checkpoint and the history. BatchNorm
statistics (hand net) stay per rank, as DDP does by default.

This module imports Dask only inside the functions that need it: torchrun ranks never pay for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from simgan.config import Params
from simgan.data.format import DATA_KINDS, LABELS_GROUP, DatasetWriter, open_dataset
from simgan.estimators import EstimatorConfig, read_training_labels, save_estimator, train_estimator
from simgan.io import SimganError, write_text_atomic
from simgan.refine import refine_dataset

# ----------------------------------------------------------------------------------------------
# Sharded refinement


def plan_shards(n: int, chunk_rows: int, shards: int) -> list[tuple[int, int]]:
    """Split rows [0, n) into at most `shards` contiguous (start, stop) ranges that start on
    multiples of `chunk_rows`, as even as whole chunks allow."""
    if shards < 1:
        raise ValueError(f"shards: expected >= 1, got {shards}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected >= 1, got {chunk_rows}")
    chunks = -(-n // chunk_rows)
    k = max(1, min(shards, chunks))
    cuts = [round(i * chunks / k) * chunk_rows for i in range(k)] + [n]
    return [(min(a, n), min(b, n)) for a, b in zip(cuts, cuts[1:]) if min(a, n) < min(b, n)]


def load_refiner_any(refiner: str | os.PathLike | nn.Module) -> nn.Module:
    """A refiner module, or the path of a refiner checkpoint (loaded where the shard runs, so a
    Dask worker fetches a path, not a pickled network)."""
    if isinstance(refiner, nn.Module):
        return refiner
    from simgan.checkpoint import load_refiner

    return load_refiner(refiner)[0]


def refine_shard(
    src: str, shard_path: str, refiner, start: int, stop: int, *, threads: int | None = None, **refine_kwargs
) -> str:
    """Refine rows [start, stop) of `src` into `shard_path`; returns `shard_path`.

    `threads` sets torch's intra-op threads in this process (a Dask worker's share of the cores)."""
    if threads:
        torch.set_num_threads(int(threads))
    refine_kwargs.setdefault("progress", False)
    refine_dataset(src, shard_path, load_refiner_any(refiner), rows=slice(start, stop), **refine_kwargs)
    return shard_path


def combine_shards(shard_paths: Sequence[str | os.PathLike], dst: str | os.PathLike) -> int:
    """Concatenate shard files in the given (row) order into `dst` atomically; returns rows.

    Attrs come from the first shard minus its `rows`; label units are carried per key."""
    if not shard_paths:
        raise ValueError("shard_paths: expected at least one shard file")
    with open_dataset(shard_paths[0], require_labels=False) as first:
        attrs = {k: v for k, v in first.attrs.items() if k != "rows"}
        chunk_rows = first.chunk_rows
        units = {k: first.unit(k) for k in first.keys() if k.startswith(LABELS_GROUP + "/")}
    n = 0
    with DatasetWriter(dst, attrs, chunk_rows=chunk_rows, require_labels=False) as w:
        for path in shard_paths:
            with open_dataset(path, require_labels=False) as ds:
                for block in ds.iter_chunks():
                    w.append(block)
                n += ds.n
        for key, unit in units.items():
            w.set_group_attrs(key, unit=unit)
    return n


@contextmanager
def shard_dir(dst: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder beside `dst` for shard files, removed afterwards (also on failure)."""
    d = Path(dst).parent / f".{Path(dst).name}.shards-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def shard_jobs(src: str | os.PathLike, dst: str | os.PathLike, shards: int, folder: Path) -> list[dict]:
    """One dict per shard: the src, shard_path, start, stop arguments of refine_shard."""
    with open_dataset(src, require_labels=False) as ds:
        plan = plan_shards(ds.n, ds.chunk_rows, shards)
    return [
        dict(src=str(src), shard_path=str(folder / f"shard{i:05d}.h5"), start=a, stop=b)
        for i, (a, b) in enumerate(plan)
    ]


def refine_sharded(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    refiner,
    *,
    client,
    shards: int | None = None,
    threads: int | None = 1,
    **refine_kwargs,
) -> int:
    """`refine_dataset(src, dst, refiner, **refine_kwargs)` fanned out over row shards on a
    `distributed.Client`; same bytes in every key. `shards` defaults to the cluster's thread count."""
    if shards is None:
        shards = max(1, sum(client.nthreads().values()))
    with shard_dir(dst) as folder:
        jobs = shard_jobs(src, dst, shards, folder)
        futures = [
            client.submit(refine_shard, refiner=refiner, threads=threads, pure=False, **job, **refine_kwargs)
            for job in jobs
        ]
        paths = client.gather(futures)
        return combine_shards(paths, dst)


# ----------------------------------------------------------------------------------------------
# Data-parallel estimator training (torchrun)


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str = "cpu") -> torch.device:
    """Join torchrun's process group when there is more than one process (gloo on CPU, nccl on
    CUDA); returns this rank's device. One process needs no group and gets `device` as is."""
    rank, size, local = world()
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def _train_estimator_main(args: argparse.Namespace) -> int:
    from simgan.augment import photometric_augment

    cfg = EstimatorConfig.from_params(Params.load(args.params), args.task)
    kind = args.task if args.task in DATA_KINDS else "generic"  # a user task's data are generic
    dev = init_distributed(cfg.device)
    rank, size, _ = world()
    try:
        with open_dataset(args.data, require_labels=True) as ds:
            n = ds.n if args.rows is None else args.rows
            if n < 1 or n > ds.n:
                raise SimganError(f"{args.data}: --rows {args.rows}: expected 1..{ds.n}")
            images = ds.read([ds.image_key], slice(0, n))[ds.image_key]
            labels, columns = read_training_labels(ds, kind, slice(0, n), name=args.task)
        augment = photometric_augment(kind, cfg.augment) if args.augment else None
        model, history = train_estimator(
            kind,
            images,
            labels,
            dataclasses.replace(cfg, device=str(dev)),
            seed=args.seed,
            augment=augment,
            columns=columns,
        )
        if rank == 0:
            meta = {"task": args.task, "seed": args.seed, "train_n": int(n), "processes": size, "data": str(args.data)}
            save_estimator(args.out, model, meta)
            if args.history:
                write_text_atomic(args.history, json.dumps(history, indent=1) + "\n")
            print(f"train-estimator: {size} process(es), {n} images, {cfg.steps} steps -> {args.out}", flush=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simgan.distributed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train-estimator",
        help="train one estimator seed with params.yaml's estimator.TASK settings, "
        "data-parallel under torchrun (or as one process)",
    )
    t.add_argument(
        "--task",
        required=True,
        help="gaze, hand or a user task (generic data): params.yaml's estimator.TASK "
        "holds the training settings, as for the estimator stage",
    )
    t.add_argument("--data", required=True, help="a labelled data set file (first --rows rows are the training set)")
    t.add_argument("--rows", type=int, default=None)
    t.add_argument("--seed", type=int, default=0, help="draws the initial weights, the batches and their augmentation")
    t.add_argument(
        "--augment", action="store_true", help="photometric augmentation with estimator.TASK.augment's strengths"
    )
    t.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    t.add_argument("--out", required=True, help="checkpoint path (written by rank 0)")
    t.add_argument("--history", default=None, help="loss history JSON path (written by rank 0)")
    t.set_defaults(func=_train_estimator_main)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SimganError, ValueError) as e:
        print(f"simgan.distributed {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
