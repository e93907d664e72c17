"""Export the labels of a data set file to Parquet: one row per image, for pandas/notebooks.

Columns, in this order (only those the file has):
  index                                  row number in the file (int64)
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
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simgan.data.format import LABELS_GROUP, open_dataset
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


_LABEL_KEYS = ("gaze", "pupil", "head_pose", "landmarks", "joints")


def export_labels(h5_path: str | os.PathLike, out_parquet: str | os.PathLike) -> int:
    """Write every label of `h5_path` to `out_parquet` (atomically); returns the row count."""
    out_parquet = Path(out_parquet)
    if out_parquet.suffix.lower() != ".parquet":
        raise SimganError(f"--out {out_parquet}: expected a .parquet file name")
    with open_dataset(h5_path, require_labels=False) as ds:
        keys = [k for k in ds.keys() if k in _LABEL_KEYS or k.startswith(LABELS_GROUP + "/")]
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
