"""The project's data set format: one HDF5 file per data set and split.

Every stage reads and writes through this module, so a file that opens here is a file every stage
can use. The full specification, with examples, is docs/data_format.md; in short:

* root attrs: format_version (=1), task ("gaze" | "hand" | "generic"), domain ("synthetic" |
  "real" | "refined"), source, generator_version, seed (-1 if none); extra attrs are allowed.
* gaze:    images (N,35,55) uint8; gaze (N,3) float32 unit vectors (MPIIGaze normalized camera:
           pitch = asin(-y), yaw = atan2(-x, -z)); optional pupil (N,2), landmarks (N,K,2)
           float32 (x = column, y = row, pixel centres at integers), head_pose (N,3) float32 degrees.
* hand:    depth (N,S,S) float32 in [-1,1] (1 = far / background); joints (N,14,3) float32
           (u, v pixels, d normalized like depth); optional mask (N,S,S) uint8.
* generic: images (N,H,W) or (N,H,W,C) uint8.
* any task: numeric label columns labels/<name> shaped (N,) or (N,k), each with attr `unit`;
           optional files (N,) UTF-8 strings: each row's source file, relative to the imported
           folder ('a/b.png'), as `simgan import folder` writes it.

All datasets are chunked along N with the same row count, so `Dataset.iter_chunks` reads whole
chunks and a stream of a file never holds more than a chunk per key.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from simgan import __version__
from simgan.io import SimganError, atomic_path

FORMAT_VERSION = 1
# The data kinds a file can hold (attr `task`): the paper's two tasks, and "generic" for a task of
# the user's own images; each kind has its own image and label keys and its own estimator.
DATA_KINDS = ("gaze", "hand", "generic")
DOMAINS = ("synthetic", "real", "refined")
GAZE_IMAGE_SHAPE = (35, 55)  # (H, W): the paper's crop; several ports transposed it by mistake
HAND_JOINTS = 14
LABELS_GROUP = "labels"
GAZE_NORM_TOLERANCE = 1e-3
VALIDATE_ROWS = 65536  # label rows read at a time when a file is validated on open
REQUIRED_ATTRS = ("format_version", "task", "domain", "source", "generator_version", "seed")
COMPRESSIONS = (None, "lzf", "gzip")
# Optional per-row source file names (any task): variable-length UTF-8 strings, shape (N,).
FILES_KEY = "files"
_FILES_DESCRIBE = "UTF-8 strings (N,): each row's source file name"

# Chunks of about this many bytes per key keep HDF5 overhead negligible while a streamed chunk of
# even 224x224 depth maps stays small; the row count is clamped so labels and images share chunks.
_TARGET_CHUNK_BYTES = 4 << 20
_MIN_CHUNK_ROWS, _MAX_CHUNK_ROWS = 64, 1024
_LABELS_FIRST_CHUNK_ROWS = 256  # labels appended before any image: image row size not known yet


class DatasetError(SimganError):
    """A data set file or array that does not follow the format; the message starts with the file."""


@dataclass(frozen=True)
class _KeySpec:
    dtype: np.dtype
    tail: tuple  # trailing shape after N; None = any positive size, a str = a size shared by name
    label: bool  # checked for finiteness; "required" is decided per task
    describe: str


_U8, _F32 = np.dtype(np.uint8), np.dtype(np.float32)

_SPECS: dict[str, dict[str, _KeySpec]] = {
    "gaze": {
        "images": _KeySpec(_U8, GAZE_IMAGE_SHAPE, False, "uint8 (N, 35, 55)"),
        "gaze": _KeySpec(_F32, (3,), True, "float32 (N, 3)"),
        "pupil": _KeySpec(_F32, (2,), True, "float32 (N, 2)"),
        "landmarks": _KeySpec(_F32, (None, 2), True, "float32 (N, K, 2)"),
        "head_pose": _KeySpec(_F32, (3,), True, "float32 (N, 3)"),
    },
    "hand": {
        "depth": _KeySpec(_F32, ("S", "S"), False, "float32 (N, S, S)"),
        "joints": _KeySpec(_F32, (HAND_JOINTS, 3), True, f"float32 (N, {HAND_JOINTS}, 3)"),
        "mask": _KeySpec(_U8, ("S", "S"), False, "uint8 (N, S, S) matching depth"),
    },
    "generic": {
        "images": _KeySpec(_U8, (None, None), False, "uint8 (N, H, W) or (N, H, W, C)"),
    },
}
_REQUIRED_LABELS = {"gaze": ("gaze",), "hand": ("joints",), "generic": ()}


def _check_task(task, where: str) -> str:
    if task not in DATA_KINDS:
        raise DatasetError(f"{where}: attr 'task': expected one of {list(DATA_KINDS)}, got {task!r}")
    return task


def image_key(task: str) -> str:
    """The key holding the images of a task: "depth" for hands, "images" otherwise."""
    return "depth" if _check_task(task, "image_key") == "hand" else "images"


def label_keys(task: str) -> tuple[str, ...]:
    """Label keys a labelled file of this task must have (optional ones are checked when present)."""
    return _REQUIRED_LABELS[_check_task(task, "label_keys")]


def optional_keys(task: str) -> tuple[str, ...]:
    specs = _SPECS[_check_task(task, "optional_keys")]
    return tuple(k for k in specs if k != image_key(task) and k not in _REQUIRED_LABELS[task])


def _default_chunk_rows(row_bytes: int) -> int:
    rows = _TARGET_CHUNK_BYTES // max(1, row_bytes)
    return int(min(_MAX_CHUNK_ROWS, max(_MIN_CHUNK_ROWS, rows)))


# ---------------------------------------------------------------------------------------------
# Validation: one function checks shapes/dtypes (cheap, from metadata) and one checks values of
# labels (small, read in full). Both run on open and before a writer renames its file into place.


def _shape_str(dtype, shape) -> str:
    return f"{np.dtype(dtype)} {tuple(shape)}"


def _is_string_dtype(dtype) -> bool:
    """An HDF5 string dtype, or what a writer may be given for one: str/bytes numpy arrays or objects."""
    return h5py.check_string_dtype(np.dtype(dtype)) is not None or np.dtype(dtype).kind in "OUS"


def _check_file_names(where: str, values: np.ndarray, row0: int = 0) -> None:
    for i, name in enumerate(values):
        if not isinstance(name, str) or not name:
            raise DatasetError(
                f"{where}: key '{FILES_KEY}': expected a non-empty file name (str) per row, got {name!r} at row {row0 + i}"
            )


def _check_key(where: str, task: str, key: str, dtype, shape, named_sizes: dict[str, int]) -> None:
    """Dtype and trailing shape of one key (N is compared across keys by _check_structure)."""
    specs = _SPECS[task]
    if key == FILES_KEY:
        if not (_is_string_dtype(dtype) and len(shape) == 1):
            raise DatasetError(f"{where}: key '{key}': expected {_FILES_DESCRIBE}, got {_shape_str(dtype, shape)}")
    elif key.startswith(LABELS_GROUP + "/"):
        ok = np.dtype(dtype).kind in "biuf" and len(shape) in (1, 2) and all(s > 0 for s in shape[1:])
        if not ok:
            raise DatasetError(
                f"{where}: key '{key}': expected a numeric (N,) or (N, k) label column, got {_shape_str(dtype, shape)}"
            )
    elif key not in specs:
        raise DatasetError(
            f"{where}: key '{key}': not part of the '{task}' format (allowed: {sorted([*specs, FILES_KEY])}; "
            f"put extra numeric labels under '{LABELS_GROUP}/')"
        )
    else:
        spec = specs[key]
        tail = tuple(shape[1:])
        tail_spec = spec.tail
        if task == "generic" and len(tail) == 3:
            tail_spec = (None, None, None)  # channel-last colour
        ok = len(shape) >= 1 and np.dtype(dtype) == spec.dtype and len(tail) == len(tail_spec)
        for size, want in zip(tail, tail_spec) if ok else ():
            if isinstance(want, str):
                ok = ok and size > 0 and named_sizes.setdefault(want, size) == size
            elif want is None:
                ok = ok and size > 0
            else:
                ok = ok and size == want
        if not ok:
            raise DatasetError(f"{where}: key '{key}': expected {spec.describe}, got {_shape_str(dtype, shape)}")
    if len(shape) == 0 or shape[0] == 0:
        raise DatasetError(f"{where}: key '{key}': expected at least one row (N >= 1), got {_shape_str(dtype, shape)}")


def _check_structure(where: str, task: str, meta: Mapping[str, tuple], require_labels: bool) -> int:
    """meta: key -> (dtype, shape). Returns N. Raises DatasetError naming file and key."""
    img = image_key(task)
    needed = (img,) + (label_keys(task) if require_labels else ())
    for key in needed:
        if key not in meta:
            hint = "" if key == img else " (pass require_labels=False to read an unlabeled file)"
            raise DatasetError(f"{where}: key '{key}': missing; expected {_SPECS[task][key].describe}{hint}")
    named_sizes: dict[str, int] = {}
    for key in sorted(meta, key=lambda k: k != img):  # image first: its N is the reference
        _check_key(where, task, key, *meta[key], named_sizes)
    n = meta[img][1][0]
    for key, (dtype, shape) in meta.items():
        if shape[0] != n:
            raise DatasetError(
                f"{where}: key '{key}': expected N = {n} rows like '{img}', got {_shape_str(dtype, shape)}"
            )
    return int(n)


def _check_label_values(where: str, task: str, key: str, values: np.ndarray, row0: int = 0) -> None:
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            row = row0 + int(np.argwhere(bad)[0][0])
            raise DatasetError(f"{where}: key '{key}': expected finite values, got {values[row - row0]!r} at row {row}")
    if task == "gaze" and key == "gaze":
        err = np.abs(np.linalg.norm(values.astype(np.float64), axis=1) - 1.0)
        if (err > GAZE_NORM_TOLERANCE).any():
            row = int(np.argmax(err))
            raise DatasetError(
                f"{where}: key 'gaze': expected unit vectors (| |v| - 1 | <= {GAZE_NORM_TOLERANCE}), "
                f"got norm {np.linalg.norm(values[row]):.6f} at row {row0 + row}"
            )


def _check_image_values(where: str, task: str, key: str, values: np.ndarray, row0: int = 0) -> None:
    if task == "hand" and key == "depth":
        bad = ~(np.abs(values) <= 1.0)  # also catches NaN
        if bad.any():
            row = row0 + int(np.argwhere(bad)[0][0])
            raise DatasetError(
                f"{where}: key 'depth': expected finite values in [-1, 1], found a violation at row {row}"
            )


def _check_values(where: str, task: str, key: str, values: np.ndarray, row0: int = 0) -> None:
    if key == FILES_KEY:
        _check_file_names(where, values, row0)
        return
    spec = _SPECS[task].get(key)
    if spec is None or spec.label:
        _check_label_values(where, task, key, values, row0)
    else:
        _check_image_values(where, task, key, values, row0)


def _check_attrs(where: str, attrs: Mapping) -> tuple[str, str]:
    for name in REQUIRED_ATTRS:
        if name not in attrs:
            raise DatasetError(
                f"{where}: attr '{name}': missing; expected one of the root attrs {list(REQUIRED_ATTRS)}"
            )
    if int(attrs["format_version"]) != FORMAT_VERSION:
        raise DatasetError(
            f"{where}: attr 'format_version': expected {FORMAT_VERSION}, got {attrs['format_version']!r}"
        )
    task = _as_str(attrs["task"])
    _check_task(task, where)
    domain = _as_str(attrs["domain"])
    if domain not in DOMAINS:
        raise DatasetError(f"{where}: attr 'domain': expected one of {list(DOMAINS)}, got {domain!r}")
    try:
        int(attrs["seed"])
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: attr 'seed': expected an integer (-1 if none), got {attrs['seed']!r}") from None
    return task, domain


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _h5_keys(h5: h5py.File) -> list[str]:
    keys = [k for k, v in h5.items() if isinstance(v, h5py.Dataset)]
    if LABELS_GROUP in h5:
        group = h5[LABELS_GROUP]
        keys += [f"{LABELS_GROUP}/{k}" for k, v in group.items() if isinstance(v, h5py.Dataset)]
    return keys


def _validate_h5(h5: h5py.File, where: str, require_labels: bool) -> tuple[str, str, int]:
    """Full validation of an open file: attrs, structure, label values, first chunk of images."""
    task, domain = _check_attrs(where, h5.attrs)
    for name, obj in h5.items():
        if not isinstance(obj, h5py.Dataset) and name != LABELS_GROUP:
            raise DatasetError(f"{where}: key '{name}': expected a dataset, got a group")
    keys = _h5_keys(h5)
    n = _check_structure(where, task, {k: (h5[k].dtype, h5[k].shape) for k in keys}, require_labels)
    for key in keys:
        if key.startswith(LABELS_GROUP + "/") and "unit" not in h5[key].attrs:
            raise DatasetError(f"{where}: key '{key}': attr 'unit' missing; expected a string (may be '')")
        spec = _SPECS[task].get(key)
        if key == FILES_KEY:
            for start in range(0, n, VALIDATE_ROWS):
                _check_values(where, task, key, h5[key].asstr()[start : start + VALIDATE_ROWS], row0=start)
        elif spec is None or spec.label:
            # Every label row is checked, a block at a time: memory stays constant however many
            # rows the file has (reading a 1M-row landmark column whole took ~130 MiB).
            for start in range(0, n, VALIDATE_ROWS):
                _check_values(where, task, key, h5[key][start : start + VALIDATE_ROWS], row0=start)
        else:
            # Images can be GBs; the writer checked every appended row, so a sample suffices here.
            _check_values(where, task, key, h5[key][: min(n, h5[key].chunks[0] if h5[key].chunks else n)])
    return task, domain, n


@contextlib.contextmanager
def _wrap_h5_errors(where: str, what: str) -> Iterator[None]:
    try:
        yield
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise DatasetError(
            f"{where}: {what}: expected a readable HDF5 data set file, got {type(e).__name__}: {e}"
        ) from e


# ---------------------------------------------------------------------------------------------
# Reading


class Dataset:
    """A validated, open data set file. Reads return numpy arrays; use as a context manager."""

    def __init__(self, path: str | os.PathLike, require_labels: bool = True):
        self.path = Path(path)
        where = str(self.path)
        if not self.path.exists():
            raise DatasetError(f"{where}: file not found; expected an HDF5 data set file")
        with _wrap_h5_errors(where, "open"):
            self._h5 = h5py.File(self.path, "r")
        try:
            with _wrap_h5_errors(where, "validate"):
                self.task, self.domain, self.n = _validate_h5(self._h5, where, require_labels)
        except BaseException:
            self._h5.close()
            raise
        self.attrs = {k: _attr_value(v) for k, v in self._h5.attrs.items()}
        self._keys = _h5_keys(self._h5)  # read-only file: listing once keeps per-chunk reads cheap
        self.image_key = image_key(self.task)
        first = self._h5[self.image_key]
        self.chunk_rows = int(first.chunks[0]) if first.chunks else self.n

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def _dataset(self, key: str) -> h5py.Dataset:
        if key not in self._keys:
            raise DatasetError(f"{self.path}: key '{key}': missing; this file has {self.keys()}")
        return self._h5[key]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.read([key])[key]

    def _rows(self, rows: slice | None) -> tuple[int, int]:
        if rows is None:
            return 0, self.n
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise DatasetError(f"{self.path}: parameter 'rows': expected a contiguous slice or None, got {rows!r}")
        start, stop, _ = rows.indices(self.n)
        return start, max(start, stop)

    def read(self, keys: Iterable[str] | None = None, rows: slice | None = None) -> dict[str, np.ndarray]:
        keys = self.keys() if keys is None else list(keys)
        start, stop = self._rows(rows)
        out = {}
        for key in keys:
            ds = self._dataset(key)
            with _wrap_h5_errors(str(self.path), f"key '{key}'"):
                out[key] = ds.asstr()[start:stop] if key == FILES_KEY else ds[start:stop]
        return out

    def file_names(self, rows: slice | None = None) -> np.ndarray | None:
        """Each row's source file name (object array of str), or None if the file stores none."""
        return self.read([FILES_KEY], rows)[FILES_KEY] if FILES_KEY in self else None

    def iter_chunks(
        self, keys: Iterable[str] | None = None, rows: slice | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield dicts of consecutive row blocks aligned to the file's chunks (the last may be short)."""
        keys = self.keys() if keys is None else list(keys)
        start, stop = self._rows(rows)
        step = self.chunk_rows
        pos = start
        while pos < stop:
            end = min(stop, (pos // step + 1) * step)
            yield self.read(keys, slice(pos, end))
            pos = end

    def label_columns(self) -> dict[str, tuple[np.ndarray, str]]:
        if LABELS_GROUP not in self._h5:
            return {}
        out = {}
        for name, ds in self._h5[LABELS_GROUP].items():
            with _wrap_h5_errors(str(self.path), f"key '{LABELS_GROUP}/{name}'"):
                out[name] = (ds[()], _as_str(ds.attrs["unit"]))
        return out

    def unit(self, key: str) -> str:
        return _as_str(self._dataset(key).attrs.get("unit", ""))

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, task={self.task!r}, domain={self.domain!r}, n={self.n})"


def _attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def open_dataset(path: str | os.PathLike, require_labels: bool = True) -> Dataset:
    """Open and validate a data set file; raises DatasetError naming the file and key on any problem."""
    return Dataset(path, require_labels=require_labels)


def read_arrays(
    path: str | os.PathLike, keys: Iterable[str] | None = None, require_labels: bool = True
) -> dict[str, np.ndarray]:
    with open_dataset(path, require_labels=require_labels) as ds:
        return ds.read(keys)


# ---------------------------------------------------------------------------------------------
# Writing


def _normalize_attrs(where: str, attrs: Mapping) -> dict:
    attrs = dict(attrs)
    declared = attrs.get("format_version", FORMAT_VERSION)
    if int(declared) != FORMAT_VERSION:
        raise DatasetError(f"{where}: attr 'format_version': expected {FORMAT_VERSION}, got {declared!r}")
    attrs["format_version"] = FORMAT_VERSION
    attrs.setdefault("generator_version", f"simgan {__version__}")
    attrs.setdefault("seed", -1)
    for name in ("task", "domain", "source"):
        if name not in attrs:
            raise DatasetError(f"{where}: attr '{name}': missing; expected it in the writer's attrs")
    _check_attrs(where, attrs)
    return attrs


class DatasetWriter:
    """Streaming writer: `with DatasetWriter(path, attrs) as w: w.append({...})`.

    Each key is a resizable dataset, so keys may be appended in separate calls (e.g. images
    chunk by chunk and labels copied from a source file); on clean exit the file is validated
    (same checks as open_dataset) and renamed onto `path`. On an exception the temporary file is
    removed and an existing file at `path` stays untouched."""

    def __init__(
        self,
        path: str | os.PathLike,
        attrs: Mapping,
        chunk_rows: int | None = None,
        compression: str | None = None,
        require_labels: bool = True,
    ):
        self.path = Path(path)
        self._where = str(self.path)
        self.attrs = _normalize_attrs(self._where, attrs)
        self.task = _as_str(self.attrs["task"])
        if chunk_rows is not None and (not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1):
            raise DatasetError(
                f"{self._where}: parameter 'chunk_rows': expected a positive integer or None, got {chunk_rows!r}"
            )
        if compression not in COMPRESSIONS:
            raise DatasetError(
                f"{self._where}: parameter 'compression': expected one of {list(COMPRESSIONS)}, got {compression!r}"
            )
        self.chunk_rows = chunk_rows
        self.compression = compression
        self.require_labels = require_labels
        self._key_attrs: dict[str, dict] = {}
        self._rows: dict[str, int] = {}
        self._atomic = None
        self._h5 = None

    def __enter__(self) -> DatasetWriter:
        self._atomic = atomic_path(self.path, suffix=".h5.tmp")
        tmp = self._atomic.__enter__()
        try:
            self._h5 = h5py.File(tmp, "w")
            # Attrs in name order, not the caller's dict order: HDF5 keeps them in the object header
            # in creation order, so the same attrs set in another order made another file (the
            # sharded refinement's combined file differed from refine_dataset's in 200-odd header
            # bytes). Same data and attrs -> same bytes, whoever writes them.
            for k, v in sorted(self.attrs.items()):
                self._h5.attrs[k] = v
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _create(self, key: str, arr: np.ndarray) -> h5py.Dataset:
        rows = self.chunk_rows
        if rows is None:
            if key == image_key(self.task):
                # Labels written after this share the image chunking, so chunked reads line up.
                rows = self.chunk_rows = _default_chunk_rows(arr[:1].nbytes)
            else:
                rows = _LABELS_FIRST_CHUNK_ROWS
        ds = self._h5.create_dataset(
            key,
            shape=(0,) + arr.shape[1:],
            maxshape=(None,) + arr.shape[1:],
            dtype=h5py.string_dtype("utf-8") if key == FILES_KEY else arr.dtype,
            chunks=(rows,) + arr.shape[1:],
            compression=self.compression,
            track_times=False,  # h5py's default today; a creation time in the header would make every write a new file
        )
        if key.startswith(LABELS_GROUP + "/"):
            ds.attrs["unit"] = ""
        return ds

    def append(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Append rows to each key (keys may have different row counts per call)."""
        if self._h5 is None:
            raise DatasetError(f"{self._where}: DatasetWriter.append called outside its `with` block")
        for key, arr in arrays.items():
            arr = np.asarray(arr)
            if key == FILES_KEY and arr.ndim == 1 and arr.dtype.kind in "OUS":  # str objects, however built
                arr = np.array([v.decode() if isinstance(v, bytes) else v for v in arr.tolist()], dtype=object)
            existing = self._h5[key] if key in self._h5 else None
            if existing is not None and existing.shape[1:] != arr.shape[1:]:
                raise DatasetError(
                    f"{self._where}: key '{key}': appended rows {_shape_str(arr.dtype, arr.shape)} "
                    f"do not match earlier rows {_shape_str(existing.dtype, existing.shape)}"
                )
            if arr.ndim >= 1 and arr.shape[0] == 0:
                continue  # an empty block adds nothing; zero rows overall is caught at close
            # Sizes shared by name (hand S) must agree with keys written earlier.
            named = {}
            for other in self._h5:
                if other in _SPECS[self.task] and other != key:
                    _check_key(self._where, self.task, other, self._h5[other].dtype, self._h5[other].shape, named)
            _check_key(self._where, self.task, key, arr.dtype, arr.shape, named)
            start = self._rows.get(key, 0)
            _check_values(self._where, self.task, key, arr, row0=start)
            ds = existing if existing is not None else self._create(key, arr)
            try:
                ds.resize(start + arr.shape[0], axis=0)
                ds[start:] = arr
                ds.flush()  # a full disk fails here, not after the whole data set is computed
            except (OSError, RuntimeError) as e:
                raise _write_error(self._where, e) from None
            self._rows[key] = start + arr.shape[0]

    def set_group_attrs(self, key: str, **attrs) -> None:
        """Set attrs on a key, e.g. set_group_attrs("labels/age", unit="years"); applied at close."""
        self._key_attrs.setdefault(key, {}).update(attrs)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            self._atomic.__exit__(exc_type, exc, tb)  # removes the temp file; `path` untouched
            return
        try:
            for key, kattrs in sorted(self._key_attrs.items()):
                if key not in self._h5:
                    raise DatasetError(f"{self._where}: key '{key}': attrs set for a key that was never written")
                for name, value in sorted(kattrs.items()):
                    self._h5[key].attrs[name] = value
            try:
                self._h5.flush()
            except (OSError, RuntimeError) as e:
                raise _write_error(self._where, e) from None
            _validate_h5(self._h5, self._where, self.require_labels)
            try:
                self._h5.close()
            except (OSError, RuntimeError) as e:
                raise _write_error(self._where, e) from None
        except BaseException as e:
            self._discard()
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._h5 = None
        self._atomic.__exit__(None, None, None)

    def _discard(self) -> None:
        """Close the temp file being thrown away. Its pending writes go to /dev/null: after a write
        error (disk full) HDF5 cannot close it otherwise, and crashes the interpreter at exit."""
        with contextlib.suppress(Exception):
            fd = self._h5.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        with _quiet_unraisable(), contextlib.suppress(OSError, RuntimeError):
            self._h5.close()
        self._h5 = None


def _write_error(where: str, e: BaseException) -> DatasetError:
    # HDF5's first line is a timestamp; the OS error it wraps is the part worth reading
    m = re.search(r"errno = (\d+), error message = '([^']*)'", str(e))
    detail = f"[Errno {m[1]}] {m[2]}" if m else (str(e).splitlines() or [type(e).__name__])[0]
    return DatasetError(
        f"{where}: cannot write the data set file ({detail}); disk full or file size limit? "
        "Any existing file at this path is left unchanged"
    )


@contextlib.contextmanager
def _quiet_unraisable() -> Iterator[None]:
    """h5py reports write errors of objects it closes during cleanup through sys.unraisablehook, as
    tracebacks on stderr; for a temp file being deleted after one clear error they only bury it."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = hook


def write_dataset(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping,
    chunk_rows: int | None = None,
    compression: str | None = None,
    require_labels: bool = True,
    units: Mapping[str, str] | None = None,
) -> None:
    """Validate `arrays` (keys as in the format; label columns as "labels/<name>") and write atomically.

    `units` maps a label column name (with or without the "labels/" prefix) to its unit."""
    with DatasetWriter(path, attrs, chunk_rows=chunk_rows, compression=compression, require_labels=require_labels) as w:
        # Structure first, so a bad key fails before any byte is written.
        task = w.task
        _check_structure(
            str(path), task, {k: (np.asarray(v).dtype, np.shape(v)) for k, v in arrays.items()}, require_labels
        )
        img = image_key(task)
        w.append({k: arrays[k] for k in sorted(arrays, key=lambda k: k != img)})
        for name, unit in (units or {}).items():
            key = name if name.startswith(LABELS_GROUP + "/") else f"{LABELS_GROUP}/{name}"
            w.set_group_attrs(key, unit=unit)


def copy_labels(source: Dataset, writer: DatasetWriter, rows: slice | None = None) -> None:
    """Carry every key except the image key from `source` into `writer`, byte for byte (with units),
    chunk by chunk. The refine stage relies on labels surviving refinement unchanged."""
    keys = [k for k in source.keys() if k != source.image_key]
    if not keys:
        return
    for block in source.iter_chunks(keys, rows):
        writer.append(block)
    for key in keys:
        if key.startswith(LABELS_GROUP + "/"):
            writer.set_group_attrs(key, unit=source.unit(key))


# ---------------------------------------------------------------------------------------------
# Tensors: the networks see N x C x H x W float32 in [-1, 1] (tanh range) for every task.


def pixels_to_unit(pixels):
    """Stored uint8 pixels (torch tensor or numpy array, any shape) -> float32 tensor in [-1, 1]:
    x / 127.5 - 1, a float32 division then a subtraction. The one definition of the stored scale:
    the GAN's batches, the refiner's input and the estimators' input all come through here."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
    if t.dtype != torch.uint8:
        raise DatasetError(f"pixels_to_unit: parameter 'pixels': expected uint8, got {t.dtype}")
    return t.to(torch.float32).div_(127.5).sub_(1.0)


def unit_to_pixels(values):
    """Inverse of pixels_to_unit on its range: round((y + 1) * 127.5) clamped to 0..255, as uint8.

    Computed in the input's own dtype and place: a torch tensor gives a uint8 tensor on its device,
    a numpy array (e.g. float64) a uint8 numpy array."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(values)) if isinstance(values, np.ndarray) else values
    u8 = torch.round((t + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    return u8.numpy() if isinstance(values, np.ndarray) else u8


def images_to_tensor(array: np.ndarray, task: str):
    """uint8 images (gaze/generic) -> pixels_to_unit; hand depth float32 -> as is; channels first."""
    import torch

    _check_task(task, "images_to_tensor")
    array = np.asarray(array)
    if task == "hand":
        if array.dtype != np.float32 or array.ndim != 3:
            raise DatasetError(
                f"images_to_tensor: parameter 'array': expected float32 (N, S, S) depth, got {_shape_str(array.dtype, array.shape)}"
            )
        return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(1)
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise DatasetError(
            f"images_to_tensor: parameter 'array': expected uint8 (N, H, W) or (N, H, W, C), got {_shape_str(array.dtype, array.shape)}"
        )
    t = pixels_to_unit(array)
    return t.unsqueeze(1) if array.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def tensor_to_images(tensor, task: str) -> np.ndarray:
    """Exact inverse of images_to_tensor on its range: uint8 via unit_to_pixels."""
    import torch

    _check_task(task, "tensor_to_images")
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
        raise DatasetError(
            f"tensor_to_images: parameter 'tensor': expected a N x C x H x W torch tensor, got {type(tensor).__name__} {tuple(getattr(tensor, 'shape', ()))}"
        )
    t = tensor.detach().to("cpu", torch.float32)
    if task == "hand":
        if t.shape[1] != 1:
            raise DatasetError(
                f"tensor_to_images: parameter 'tensor': expected 1 channel for hand depth, got {t.shape[1]}"
            )
        return t[:, 0].clamp(-1.0, 1.0).numpy().copy()
    u8 = unit_to_pixels(t)
    return (u8[:, 0] if u8.shape[1] == 1 else u8.permute(0, 2, 3, 1)).contiguous().numpy()
