"""Refinement of a whole data set: HDF5 in, HDF5 out, streaming chunk by chunk.

Memory holds a few chunks of the file (one being read, one refined, one being written) plus one
batch of activations, whatever N is (benchmarked at 1M images: benchmarks/bench_memory.py). Every
key other than the image key -- gaze vectors, joints, landmarks, custom label columns -- is copied
through byte for byte: refinement changes appearance, never labels.

Speed (docs/performance.md): the refiner's convolutions dominate; HDF5 reads and writes run on
two helper threads so they overlap the forward passes (torch releases the GIL while it computes).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from simgan.checkpoint import load_refiner_state
from simgan.config import Params, bf16_setting, device_param, non_negative, positive
from simgan.data.format import LABELS_GROUP, DatasetWriter, images_to_tensor, open_dataset, tensor_to_images
from simgan.device import autocast, memory_format, resolve_device
from simgan.io import SimganError
from simgan.layout import data_path, refined_path, refiner_path


def row_noise(refiner: torch.nn.Module, first_row: int, x: torch.Tensor, seed: int) -> torch.Tensor | None:
    """The noise input of a refiner that takes one (`Refiner.noise_planes`) for the images of
    rows first_row, first_row + 1, ... of a data set: each row's noise comes from its own
    generator seeded by (seed, row), so a row gets the same noise whatever the batch size, the
    shard it falls in or the device. None for a deterministic refiner."""
    k = getattr(refiner, "noise_planes", 0)
    if not k:
        return None
    g = torch.Generator()
    z = torch.empty((x.shape[0], k, *x.shape[2:]))
    for i in range(x.shape[0]):
        # torch's CPU generator keeps only 32 bits of a seed: hash (seed, row) into them
        g.manual_seed(int(np.random.SeedSequence([seed, first_row + i]).generate_state(1)[0]))
        z[i] = torch.randn(z.shape[1:], generator=g)
    return z.to(x.device)


def _refine_rows(net: torch.nn.Module, x: torch.Tensor, first_row: int, noise_seed: int) -> torch.Tensor:
    """net(x) for rows first_row, ... of a data set, with their noise input if the refiner takes one
    (a torch.compile'd refiner keeps its attributes on `_orig_mod`)."""
    noise = row_noise(getattr(net, "_orig_mod", net), first_row, x, noise_seed)
    return net(x) if noise is None else net(x, noise)


@torch.inference_mode()
def refine_batches(
    refiner: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    noise_seed: int = 0,
) -> torch.Tensor:
    """Refine a N x C x H x W float tensor in [-1, 1] batch by batch; returns float32 on the CPU.
    Row i of `images` is row i for the noise input (see row_noise)."""
    out = []
    mf = memory_format(channels_last)
    for s in range(0, images.shape[0], batch_size):
        x = images[s : s + batch_size].to(device, non_blocking=True).contiguous(memory_format=mf)
        with autocast(device, bf16):
            y = _refine_rows(refiner, x, s, noise_seed)
        out.append(y.float().cpu())
    return torch.cat(out) if out else images.new_empty((0, *images.shape[1:]))


@torch.inference_mode()
def _refine_stored(
    refiner,
    stored: np.ndarray,
    task: str,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    pad: bool,
    first_row: int = 0,
    noise_seed: int = 0,
) -> np.ndarray:
    """Stored-format images in, stored-format refined images out, converting one batch at a time:
    a chunk never exists as float32 in full (4x the uint8 bytes). `first_row` is the data set's
    row of stored[0], for the noise input.

    `pad` fills a short last batch up to batch_size so a compiled refiner sees one shape only
    (a second shape would recompile, minutes on a loaded CPU); the padding rows are dropped."""
    out = None
    mf = memory_format(channels_last)
    n = stored.shape[0]
    for s in range(0, n, batch_size):
        x = images_to_tensor(stored[s : s + batch_size], task)
        k = x.shape[0]
        if pad and k < batch_size:
            x = torch.cat([x, x.new_zeros((batch_size - k, *x.shape[1:]))])
        x = x.to(device, non_blocking=True).contiguous(memory_format=mf)
        with autocast(device, bf16):
            y = _refine_rows(refiner, x, first_row + s, noise_seed)
        y = tensor_to_images(y[:k].float(), task)
        if out is None:
            out = np.empty((n, *y.shape[1:]), dtype=y.dtype)
        out[s : s + k] = y
    return out if out is not None else stored.copy()


def _compile_context(compile: bool):
    if not compile:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config

    # Freezing treats the (inference-only) weights as constants, so inductor prepacks them once
    # for oneDNN's bf16 convolutions and fuses bias, ReLU and the residual add into them; compiled
    # without it the refiner ran no faster than eager here (docs/performance.md).
    return inductor_config.patch(freezing=True)


def refine_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    refiner: torch.nn.Module,
    *,
    batch_size: int = 256,
    rows: slice | None = None,
    device: str = "cpu",
    bf16: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    noise_seed: int = 0,
    progress: bool = True,
    extra_attrs: dict | None = None,
) -> int:
    """Write `refiner(src images)` with src's labels to `dst` (atomically). Returns rows written.

    `rows` refines a contiguous slice only: the unit of work of a sharded (Dask) refinement, whose
    shards concatenated in order are byte-identical to the single-process output.
    `compile` runs the refiner through torch.compile (with weight freezing): faster per image but
    costs a one-off compilation (about a minute on a busy 2-core CPU), so it pays only on large
    data sets; see docs/performance.md. `noise_seed` draws the noise input of a refiner that takes
    one, per row (row_noise), so shards reproduce the whole file's noise."""
    if batch_size < 1:
        raise ValueError(f"refine batch_size: expected >= 1, got {batch_size}")
    dev = resolve_device(device)
    refiner = refiner.to(dev, memory_format=memory_format(channels_last)).eval()
    net = torch.compile(refiner, dynamic=False) if compile else refiner
    with open_dataset(src, require_labels=False) as ds, _compile_context(compile):
        start, stop, _ = (rows or slice(None)).indices(ds.n)
        attrs = {**ds.attrs, "domain": "refined", "refined_from": str(src), **(extra_attrs or {})}
        if rows is not None:
            attrs["rows"] = [start, stop]
        # carry the source's chunking so shards and the whole file lay out rows identically
        with (
            DatasetWriter(dst, attrs, chunk_rows=ds.chunk_rows, require_labels=False) as w,
            ThreadPoolExecutor(2, thread_name_prefix="refine-io") as io,
        ):
            bar = tqdm(
                total=stop - start,
                disable=not progress,
                desc=f"refine {Path(src).name}",
                unit="img",
                dynamic_ncols=True,
            )
            chunks = ds.iter_chunks(rows=slice(start, stop))
            # One chunk read ahead and one write in flight: the compute never waits on HDF5, and
            # at most three chunks are held at once (bounded memory at any N). h5py serialises
            # its own calls, so reading and writing from the pool is safe.
            pending_read: Future = io.submit(next, chunks, None)
            pending_write: Future | None = None
            row = start
            while True:
                block = pending_read.result()
                if block is None:
                    break
                pending_read = io.submit(next, chunks, None)
                n = len(block[ds.image_key])
                block[ds.image_key] = _refine_stored(
                    net,
                    block[ds.image_key],
                    ds.task,
                    batch_size,
                    dev,
                    bf16,
                    channels_last,
                    pad=compile,
                    first_row=row,
                    noise_seed=noise_seed,
                )
                row += n
                if pending_write is not None:
                    pending_write.result()
                pending_write = io.submit(w.append, block)
                bar.update(n)
            if pending_write is not None:
                pending_write.result()
            bar.close()
            for key in ds.keys():
                if key.startswith(LABELS_GROUP + "/"):
                    w.set_group_attrs(key, unit=ds.unit(key))
    return stop - start


def refine_settings(p: Params, task: str, replicate: int, root: str | os.PathLike = ".") -> dict:
    """src, dst, refiner (the model file's path) and refine_dataset's keyword arguments for
    replicate `replicate` of task `task` from params.yaml's `refine` section: one reading for the
    refine stage, the sharded refinement (`simgan refine`) and the Prefect flow's, so all three
    write the same file. Paths are under `root` (the repository); `refined_from` is the source as
    the stage names it. The noise input's seed is refine.seed + replicate.

    The refiner file must be the one trained for `task` (its `task` key): a refiner of another
    task is an error here, before any image is refined."""
    root = Path(root)
    refiner = root / refiner_path(task, replicate)
    if not refiner.exists():
        raise SimganError(
            f"{refiner}: file not found; expected the trained refiner of task {task!r}, replicate {replicate} "
            f"(`dvc repro adversarial@{task}` writes it)"
        )
    steps = int(load_refiner_state(refiner, task).get("steps", -1))
    noise_seed = p.get("refine.seed", int, non_negative, default=0) + replicate
    return dict(
        src=str(root / data_path(task, "synthetic")),
        dst=str(root / refined_path(task, replicate)),
        refiner=str(refiner),
        batch_size=p.get("refine.batch_size", int, positive),
        device=device_param(p, "refine.device"),
        bf16=p.get("refine.bf16", (bool, str), bf16_setting),
        channels_last=p.get("refine.channels_last", bool),
        compile=p.get("refine.compile", bool, default=False),
        noise_seed=noise_seed,
        extra_attrs={
            "refiner_steps": steps,
            "refined_from": str(data_path(task, "synthetic")),
            "replicate": replicate,
        },
    )
