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

Data-parallel training. `ddp_train_estimator` is `simgan.estimators.train_estimator` with the
model wrapped in DistributedDataParallel: every rank draws the same batch indices and the same
augmentations from the shared seed (so the random streams match the one-process run), then
computes the loss on its own slice of the batch, scaled so that DDP's gradient average equals the
gradient of the whole batch's mean loss. With one process it is exactly train_estimator (same
weights bit for bit). Entry point for torchrun:

    torchrun --standalone --nproc_per_node 2 -m simgan.distributed train-estimator --task gaze ...

and the same arguments after `python -m simgan.distributed` run it as one process. Rank 0 alone
writes the checkpoint and the history. BatchNorm statistics (hand net) stay per rank, as DDP
does by default.

This module imports Dask only inside the functions that need it: torchrun ranks never pay for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from simgan import estimators as est
from simgan.data.format import LABELS_GROUP, DatasetWriter, open_dataset
from simgan.device import memory_format
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
    from simgan.train import load_refiner

    return load_refiner(refiner)[0]


def refine_shard(src: str, shard_path: str, refiner, start: int, stop: int, *, threads: int | None = None,
                 **refine_kwargs) -> str:
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
    return [dict(src=str(src), shard_path=str(folder / f"shard{i:05d}.h5"), start=a, stop=b)
            for i, (a, b) in enumerate(plan)]


def refine_sharded(src: str | os.PathLike, dst: str | os.PathLike, refiner, *, client, shards: int | None = None,
                   threads: int | None = 1, **refine_kwargs) -> int:
    """`refine_dataset(src, dst, refiner, **refine_kwargs)` fanned out over row shards on a
    `distributed.Client`; same bytes in every key. `shards` defaults to the cluster's thread count."""
    if shards is None:
        shards = max(1, sum(client.nthreads().values()))
    with shard_dir(dst) as folder:
        jobs = shard_jobs(src, dst, shards, folder)
        futures = [client.submit(refine_shard, refiner=refiner, threads=threads, pure=False, **job, **refine_kwargs)
                   for job in jobs]
        paths = client.gather(futures)
        return combine_shards(paths, dst)


# ----------------------------------------------------------------------------------------------
# DistributedDataParallel training


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


def batch_slice(batch: int, rank: int, size: int) -> slice:
    """This rank's rows of a batch of `batch` rows: contiguous and as even as possible."""
    return slice(rank * batch // size, (rank + 1) * batch // size)


def ddp_train_estimator(
    task: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    net_kwargs: dict | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    rotation_deg: float = 20.0,
    device="cpu",
    bf16: bool = False,
    channels_last: bool = False,
    log_every: int = 0,
    lr_schedule: str = "constant",
    columns: Sequence[str] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """train_estimator's arguments and result, data-parallel over the torchrun process group.

    Every rank holds the whole training set (it is in memory anyway) and the same generator;
    rank r trains on rows batch_slice(B, r, W) of each batch. The returned model is the unwrapped
    network (identical on every rank); history's losses are whole-batch means on every rank."""
    est.check_train_args(task, steps, batch_size, lr, rotation_deg, log_every)
    rank, size, _ = world()
    if size > 1 and not dist.is_initialized():
        raise SimganError("ddp_train_estimator: WORLD_SIZE > 1 but no process group; call init_distributed() first")
    if batch_size < size:
        raise ValueError(f"batch_size: expected an integer >= the {size} processes, got {batch_size!r}")
    if size == 1:
        return est.train_estimator(task, images, labels, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                   net_kwargs=net_kwargs, augment=augment, rotation_deg=rotation_deg, device=device,
                                   bf16=bf16, channels_last=channels_last, log_every=log_every,
                                   lr_schedule=lr_schedule, columns=columns)
    dev = est._resolve_device(device)
    model, x_all, y_all = est.prepare_training(task, images, labels, net_kwargs, seed, columns)
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    mf = memory_format(channels_last)
    model = model.to(dev, memory_format=mf).train()
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt, sched = est.make_optimizer(ddp.parameters(), lr, steps, lr_schedule)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    log = est.LossLog(steps, log_every)
    for step in range(steps):
        # The whole batch and its augmentation are drawn on every rank: the random streams then
        # stay those of the one-process run, and each rank keeps only its slice.
        xb, yb = est.draw_batch(task, x_all, y_all, batch_size, gen, rotation_deg, augment)
        b = len(xb)
        part = batch_slice(b, rank, size)
        xb, yb = xb[part].contiguous(memory_format=mf), yb[part]
        with est._autocast(dev, bf16):
            out = ddp(xb)
        # Each loss is a mean over its rows; weighting by the slice's share of the batch times
        # `size` makes DDP's average of gradients the gradient of the whole batch's mean.
        loss = est.estimator_loss(task, model, out, yb) * (len(xb) * size / b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        whole = loss.detach().float() / size
        dist.all_reduce(whole)
        log.add(step, float(whole))
    return model.eval(), log.rows


def _train_estimator_main(args: argparse.Namespace) -> int:
    from simgan.augment import photometric_augment

    dev = init_distributed(args.device)
    rank, size, _ = world()
    try:
        with open_dataset(args.data, require_labels=True) as ds:
            n = ds.n if args.rows is None else args.rows
            if n < 1 or n > ds.n:
                raise SimganError(f"{args.data}: --rows {args.rows}: expected 1..{ds.n}")
            images = ds.read([ds.image_key], slice(0, n))[ds.image_key]
            labels, columns = est.read_training_labels(ds, args.task, slice(0, n))
        augment = photometric_augment(args.task, json.loads(args.augment)) if args.augment else None
        model, history = ddp_train_estimator(
            args.task, images, labels, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            net_kwargs=json.loads(args.net), augment=augment, rotation_deg=args.rotation_deg, device=dev,
            bf16=args.bf16, channels_last=args.channels_last, log_every=args.log_every,
            lr_schedule=args.lr_schedule, columns=columns,
        )
        if rank == 0:
            meta = {"task": args.task, "seed": args.seed, "train_n": int(n), "processes": size, "data": str(args.data)}
            est.save_estimator(args.out, model, meta)
            if args.history:
                write_text_atomic(args.history, json.dumps(history, indent=1) + "\n")
            print(f"train-estimator: {size} process(es), {n} images, {args.steps} steps -> {args.out}", flush=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simgan.distributed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train-estimator", help="train one estimator seed, data-parallel under torchrun (or as one process)")
    t.add_argument("--task", required=True, choices=est.TASKS)
    t.add_argument("--data", required=True, help="a labelled data set file (first --rows rows are the training set)")
    t.add_argument("--rows", type=int, default=None)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch-size", type=int, required=True, help="the whole batch, split over the processes")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-schedule", default="constant", choices=est.LR_SCHEDULES)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--net", default="{}", help="network kwargs as JSON, e.g. '{\"width\": 0.5}'")
    t.add_argument("--augment", default=None, help="photometric augmentation strengths as JSON ('{}': defaults)")
    t.add_argument("--rotation-deg", type=float, default=20.0)
    t.add_argument("--device", default="cpu", help="cpu | cuda (each rank takes cuda:LOCAL_RANK)")
    t.add_argument("--bf16", action="store_true")
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--log-every", type=int, default=0)
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
