"""Export a data set file: its labels to Parquet (one row per image, for pandas/notebooks), and its
images as PNG files under the user's own file names with a labels CSV beside them.

Columns, in this order (only those the file has):
  index                                  row number in the file (int64)
  file                                   the row's source file name (key `files`, folder imports)
  gaze_x, gaze_y, gaze_z                 unit gaze vector (MPIIGaze normalized camera)
  pitch_deg, yaw_deg                     pitch = asin(-y), yaw = atan2(-x, -z), in degrees
  pupil_x, pupil_y                       pixels of the stored image (x = column)
  head_pitch_deg, head_yaw_deg, head_roll_deg
  lm{k}_x, lm{k}_y                       landmark k
  j{k}_u, j{k}_v, j{k}_d                 hand joint k (u, v pixels; d normalized like depth)
  <name> or <name>_{i}                   labels/<name> columns ((N,) or (N, k)); a name that
                                         clashes with a column above is written as labels/<name>
Each label column's unit is kept in its Parquet field metadata (b"unit"); the file's root attrs
(task, domain, source, ...) are in the schema metadata.

Images (export_images): one PNG per row, named after the stored file name with its extension
replaced by .png (subfolders kept), or the zero-padded row number for a file without names;
grayscale/RGB/RGBA as stored, hand depth as 16-bit grayscale (round((d + 1) / 2 * 65535), 65535
= far). `labels.csv` beside them holds the Parquet export's label columns after `file`, the PNG's
path relative to the folder, in row order: `simgan import folder DIR --labels DIR/labels.csv`
reads generic data back. The folder is written beside its target and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simgan.data.format import FILES_KEY, LABELS_GROUP, open_dataset
from simgan.data.importers import pitchyaw
from simgan.io import SimganError, atomic_path


def _flatten(name_fmt: str, arr: np.ndarray, parts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """(N, K, len(parts)) -> {name_fmt.format(k=k, p=part): column}."""
    arr = arr.reshape(len(arr), -1, len(parts))
    return {name_fmt.format(k=k, p=p): arr[:, k, j] for k in range(arr.shape[1]) for j, p in enumerate(parts)}


def label_columns(block: dict[str, np.ndarray], start: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The export columns of a block of `n` rows starting at row `start`, and for each column
    taken from labels/, the key it came from."""
    origin = {}
    cols = {"index": np.arange(start, start + n, dtype=np.int64)}
    if FILES_KEY in block:
        cols["file"] = block[FILES_KEY]
    if "gaze" in block:
        cols.update(_flatten("gaze_{p}", block["gaze"], ("x", "y", "z")))
        pitch, yaw = pitchyaw(block["gaze"])
        cols["pitch_deg"], cols["yaw_deg"] = np.degrees(pitch), np.degrees(yaw)
    if "pupil" in block:
        cols.update(_flatten("pupil_{p}", block["pupil"], ("x", "y")))
    if "head_pose" in block:
        cols.update(_flatten("head_{p}_deg", block["head_pose"], ("pitch", "yaw", "roll")))
    if "landmarks" in block:
        cols.update(_flatten("lm{k}_{p}", block["landmarks"], ("x", "y")))
    if "joints" in block:
        cols.update(_flatten("j{k}_{p}", block["joints"], ("u", "v", "d")))
    for key in sorted(k for k in block if k.startswith(LABELS_GROUP + "/")):
        name = key.split("/", 1)[1]
        name = key if name in cols else name
        arr = block[key]
        parts = {name: arr} if arr.ndim == 1 else {f"{name}_{i}": arr[:, i] for i in range(arr.shape[1])}
        cols.update(parts)
        origin.update(dict.fromkeys(parts, key))
    return cols, origin


_LABEL_KEYS = ("gaze", "pupil", "head_pose", "landmarks", "joints", FILES_KEY)


def _export_keys(ds) -> list[str]:
    return [k for k in ds.keys() if k in _LABEL_KEYS or k.startswith(LABELS_GROUP + "/")]


def export_labels(h5_path: str | os.PathLike, out_parquet: str | os.PathLike) -> int:
    """Write every label of `h5_path` to `out_parquet` (atomically); returns the row count."""
    out_parquet = Path(out_parquet)
    if out_parquet.suffix.lower() != ".parquet":
        raise SimganError(f"--out {out_parquet}: expected a .parquet file name")
    with open_dataset(h5_path, require_labels=False) as ds:
        keys = _export_keys(ds)
        units = {k: ds.unit(k) for k in keys if k.startswith(LABELS_GROUP + "/")}
        meta = {
            b"simgan_attrs": json.dumps({k: str(v) for k, v in ds.attrs.items()}, sort_keys=True).encode(),
            b"source_file": str(h5_path).encode(),
        }
        # Streamed chunk by chunk: a million UnityEyes rows with 55 landmarks stay small in memory.
        blocks = ds.iter_chunks(keys) if keys else [{}]
        with atomic_path(out_parquet, suffix=".parquet.tmp") as tmp:
            writer, start = None, 0
            try:
                for block in blocks:
                    rows = len(next(iter(block.values()))) if block else ds.n
                    cols, origin = label_columns(block, start, rows)
                    table = pa.table(cols)
                    if writer is None:
                        schema = pa.schema(
                            [
                                f.with_metadata({b"unit": units[origin[f.name]].encode()}) if f.name in origin else f
                                for f in table.schema
                            ],
                            metadata=meta,
                        )
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_table(table.cast(schema))
                    start += rows
            finally:
                if writer is not None:
                    writer.close()
        return ds.n


def png_names(names, n: int, where: str) -> list[str]:
    """The PNG path (relative, '/'-separated) of each of `n` rows: the stored file name with its
    extension replaced by .png, or the zero-padded row number where the file stores no names.
    Two names that would meet ('a.jpg' and 'a.png') keep their whole name plus .png."""
    if names is None:
        width = len(str(n - 1))
        return [f"{i:0{width}d}.png" for i in range(n)]
    out = []
    for i, name in enumerate(names):
        path = PurePosixPath(str(name).replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or not path.name:
            raise SimganError(
                f"{where}: key '{FILES_KEY}': row {i}: expected a relative file name inside the folder, got {name!r}"
            )
        out.append(path)
    pngs = [p.with_suffix(".png").as_posix() for p in out]
    taken = Counter(pngs)
    pngs = [png if taken[png] == 1 else p.as_posix() + ".png" for png, p in zip(pngs, out)]
    twice = [name for name, count in Counter(pngs).items() if count > 1]
    if twice:
        raise SimganError(f"{where}: key '{FILES_KEY}': rows would share the PNG name {twice[0]!r}")
    return pngs


def _to_png_array(image: np.ndarray, task: str) -> np.ndarray:
    if task == "hand":
        return np.round((np.clip(image, -1.0, 1.0) + 1.0) * (65535 / 2)).astype(np.uint16)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise SimganError(f"images with {image.shape[2]} channels cannot be written as PNG (1, 3 or 4)")
    return image


def check_images_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """`out_dir` unless it is a non-empty folder and not `overwrite`: then an error naming the option."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise SimganError(
            f"--images {out_dir}: the folder exists and is not empty; pass --overwrite to replace it, "
            "or name a new folder"
        )
    return out_dir


def export_images(h5_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> int:
    """Write every image of `h5_path` as a PNG under `out_dir`, with `out_dir/labels.csv`; returns
    the row count. The folder appears complete or not at all; an existing non-empty `out_dir` is an
    error unless `overwrite` (then it is replaced as a whole once the new one is written)."""
    import pandas as pd
    from PIL import Image

    out_dir = check_images_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        with open_dataset(h5_path, require_labels=False) as ds:
            names = png_names(ds.file_names(), ds.n, str(h5_path))
            keys = [ds.image_key, *_export_keys(ds)]
            start = 0
            for block in ds.iter_chunks(keys):
                rows = len(block[ds.image_key])
                for i, image in enumerate(block.pop(ds.image_key)):
                    target = tmp / names[start + i]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_to_png_array(image, ds.task)).save(target, format="PNG")
                cols, _ = label_columns(block, start, rows)
                cols.pop("file", None)
                cols.pop("index")  # row order is the file's; without it the CSV imports back as labels
                table = pd.DataFrame({"file": names[start : start + rows], **cols})
                table.to_csv(tmp / "labels.csv", mode="a", header=start == 0, index=False)
                start += rows
            n = ds.n
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def _replace_dir(new: Path, target: Path) -> None:
    """Rename the finished folder `new` onto `target`, which may be missing, empty or (overwrite) full."""
    old = None
    if target.is_dir():
        if any(target.iterdir()):
            old = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old"
            os.replace(target, old)
        else:
            target.rmdir()
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)  # the user's folder back where it was
        raise
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
