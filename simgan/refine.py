"""Refinement of a whole data set: HDF5 in, HDF5 out, streaming chunk by chunk.

Memory holds one chunk of the file plus one batch of activations, whatever N is (benchmarked at
1M images). Every key other than the image key -- gaze vectors, joints, landmarks, custom label
columns -- is copied through byte for byte: refinement changes appearance, never labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from simgan.data.format import LABELS_GROUP, DatasetWriter, images_to_tensor, open_dataset, tensor_to_images
from simgan.device import autocast, memory_format, resolve_device


@torch.inference_mode()
def refine_batches(refiner: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, bf16: bool, channels_last: bool) -> torch.Tensor:
    """Refine a N x C x H x W float tensor in [-1, 1] batch by batch; returns float32 on the CPU."""
    out = []
    mf = memory_format(channels_last)
    for s in range(0, images.shape[0], batch_size):
        x = images[s : s + batch_size].to(device, non_blocking=True).contiguous(memory_format=mf)
        with autocast(device, bf16):
            y = refiner(x)
        out.append(y.float().cpu())
    return torch.cat(out) if out else images.new_empty((0, *images.shape[1:]))


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
    progress: bool = True,
    extra_attrs: dict | None = None,
) -> int:
    """Write `refiner(src images)` with src's labels to `dst` (atomically). Returns rows written.

    `rows` refines a contiguous slice only: the unit of work of a sharded (Dask) refinement, whose
    shards concatenated in order are byte-identical to the single-process output."""
    if batch_size < 1:
        raise ValueError(f"refine batch_size: expected >= 1, got {batch_size}")
    dev = resolve_device(device)
    refiner = refiner.to(dev, memory_format=memory_format(channels_last)).eval()
    with open_dataset(src, require_labels=False) as ds:
        start, stop, _ = (rows or slice(None)).indices(ds.n)
        attrs = {**ds.attrs, "domain": "refined", "refined_from": str(src), **(extra_attrs or {})}
        if rows is not None:
            attrs["rows"] = [start, stop]
        # carry the source's chunking so shards and the whole file lay out rows identically
        with DatasetWriter(dst, attrs, chunk_rows=ds.chunk_rows, require_labels=False) as w:
            bar = tqdm(total=stop - start, disable=not progress, desc=f"refine {Path(src).name}", unit="img", dynamic_ncols=True)
            for block in ds.iter_chunks(rows=slice(start, stop)):
                x = images_to_tensor(block[ds.image_key], ds.task)
                block[ds.image_key] = tensor_to_images(refine_batches(refiner, x, batch_size, dev, bf16, channels_last), ds.task)
                w.append(block)
                bar.update(len(x))
            bar.close()
            for key in ds.keys():
                if key.startswith(LABELS_GROUP + "/"):
                    w.set_group_attrs(key, unit=ds.unit(key))
    return stop - start
