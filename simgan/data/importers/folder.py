"""A folder of images (+ an optional labels table) -> generic data set.

* Images: every file below the folder with an image extension (IMAGE_EXTS), keyed by its path
  relative to the folder with '/' separators; other files are ignored. Decoded with OpenCV (the
  header, its size and EXIF orientation, read by Pillow), turned upright by that orientation,
  to grayscale ("L") or, with color, RGB; 16-bit grayscale is scaled to 8 bits (v / 257, rounded).
* Stored size: H x W as given, or, without one, the size every image has (upright, after EXIF
  orientation); images of different sizes without a size are an error naming two of them.
* Fitting to H x W: "center" crops the centred window of the target aspect then area-resizes;
  "resize" resizes the whole image (aspect may change); "none" requires the exact size.
* Labels (CSV or Parquet): a `file` column plus numeric columns, each stored as labels/<column>
  with its dtype unchanged (CSV floats parsed round-trip exact), rows in the table's order. Every
  image needs a row and every row an image, else an error naming them. Every column must have a
  name of its own: an unnamed one (the index pandas' to_csv writes unless index=False) is an error,
  not a label the estimators would learn to predict, and so is a name used twice.
* Without labels the rows follow the natural order of the file names; the file is unlabeled and
  by default the real domain.
* Each row's file name (its path relative to the folder) is stored as key `files`, so refined rows
  and exported labels map back to the user's files.
* Undecodable images are all listed (stderr, optional report) and are an error unless skip_bad.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from simgan.data.format import FILES_KEY, DatasetWriter
from simgan.data.importers import (
    DECODE_ERRORS,
    BadInputs,
    base_attrs,
    box_around,
    crop_resize,
    grey_of_rgb,
    natural_key,
    parallel_chunks,
    read_image,
    to_8bit,
)
from simgan.io import SimganError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
CROPS = ("center", "resize", "none")


@dataclass
class FolderConfig:
    size: tuple[int, int] | None = None  # (H, W); None: the size all images share
    color: bool = False
    crop: str = "center"
    labels: Path | None = None
    units: dict[str, str] = field(default_factory=dict)
    domain: str | None = None  # default: synthetic with labels, real without
    workers: int | None = None
    chunk: int = 256
    skip_bad: bool = False
    report: Path | None = None


def parse_units(text: str | None) -> dict[str, str]:
    """'a=deg,b=px' -> {'a': 'deg', 'b': 'px'}."""
    out = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, sep, unit = item.partition("=")
        if not sep or not name.strip():
            raise SimganError(f"--units: expected name=unit[,name=unit...], got {item!r}")
        out[name.strip()] = unit.strip()
    return out


def list_images(root: Path) -> list[str]:
    files = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.name.startswith(".")
    ]
    return sorted(files, key=natural_key)


def read_labels(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".txt"):
            # the header as written: pandas renames a blank name 'Unnamed: 0' and a second 'x' 'x.1'
            _check_column_names(path, pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0])
            # pandas >= 3 parses each float to the double nearest its text (as Python's float() does);
            # the tests hold it to that, since labels must survive import bit for bit.
            df = pd.read_csv(path, dtype={"file": str})
        else:
            raise SimganError(f"{path}: expected a .csv or .parquet labels table")
    except SimganError:
        raise
    except FileNotFoundError:
        raise SimganError(f"{path}: labels table not found") from None
    except Exception as e:  # pandas/pyarrow raise many types for malformed tables
        raise SimganError(f"{path}: cannot read labels table ({type(e).__name__}: {e})") from None
    _check_column_names(path, df.columns)
    if "file" not in df.columns:
        raise SimganError(f"{path}: expected a 'file' column naming each image, got columns {list(df.columns)}")
    if len(df) == 0:
        raise SimganError(f"{path}: no rows; expected one row per image below the header")
    for col in df.columns:
        if col == "file":
            continue
        if not isinstance(col, str) or not col or "/" in col or col.startswith("."):
            raise SimganError(f"{path}: column {col!r}: expected a name without '/' (it becomes labels/<name>)")
        kind = df[col].dtype.kind
        if kind not in "biuf":
            raise SimganError(f"{path}: column '{col}': expected numbers, got dtype {df[col].dtype}")
        if kind == "f" and not np.isfinite(df[col].to_numpy()).all():
            row = int(np.argmax(~np.isfinite(df[col].to_numpy())))
            raise SimganError(f"{path}: column '{col}': missing or non-finite value for file {df['file'].iloc[row]!r}")
    files = df["file"].astype(str).str.replace("\\", "/", regex=False)
    dup = files[files.duplicated()].unique()
    if len(dup):
        raise SimganError(f"{path}: column 'file': {len(dup)} file(s) listed twice, e.g. {list(dup[:5])}")
    return df.assign(file=files).reset_index(drop=True)


# Names pandas gives a column without one: a blank CSV header cell, an index stored in Parquet.
_UNNAMED = re.compile(r"Unnamed: \d+|__index_level_\d+__")


def _check_column_names(path: Path, names) -> None:
    names = list(names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or _UNNAMED.fullmatch(name):
            hint = " (a pandas index? save the table with index=False)" if i == 0 else ""
            raise SimganError(
                f"{path}: column {i + 1} has no name{hint}; expected a name for every column, "
                f"each a label to learn, got {name!r}"
            )
        if names.count(name) > 1:
            raise SimganError(
                f"{path}: column {name!r} appears {names.count(name)} times in the header; expected unique names"
            )


def _names(items, limit=5) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(map(repr, items[:limit])) + more


def to_uint8(arr: np.ndarray, color: bool) -> np.ndarray:
    """A read_image array as stored: grey (H, W) or, with color, RGB (H, W, 3), both uint8."""
    a = to_8bit(arr)
    if color:
        return a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)
    return grey_of_rgb(a) if a.ndim == 3 else a


def fit_box(h: int, w: int, size: tuple[int, int], crop: str) -> tuple[int, int, int, int] | None:
    th, tw = size
    if crop == "resize":
        return 0, 0, w, h
    if crop == "none":
        return (0, 0, w, h) if (h, w) == (th, tw) else None
    if w * th > h * tw:  # too wide for the target aspect
        return box_around((w - 1) / 2, (h - 1) / 2, h * tw / th, h)
    return box_around((w - 1) / 2, (h - 1) / 2, w, w * th / tw)


def _size_chunk(payload, start: int, stop: int, rng) -> list[tuple[str, tuple[int, int] | None]]:
    """(file, (H, W) upright) of each file, from its header only; None where it cannot be read
    (the decoding pass reports it)."""
    root, files = payload
    out = []
    for name in files[start:stop]:
        try:
            with Image.open(root / name) as im:
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn it 90 degrees
                    w, h = h, w
            out.append((name, (h, w)))
        except DECODE_ERRORS:
            out.append((name, None))
    return out


def infer_size(root: Path, files: list[str], workers: int | None = None, chunk: int = 256) -> tuple[int, int]:
    """The (H, W) every image in `files` has; a SimganError naming two files of different sizes."""
    first = None
    for sizes in parallel_chunks(
        _size_chunk, (root, files), len(files), 0, workers, chunk, desc=f"import {root.name}: sizes"
    ):
        for name, size in sizes:
            if size is None:
                continue
            if first is None:
                first = (name, size)
            elif size != first[1]:
                (a, sa), (b, sb) = first, (name, size)
                raise SimganError(
                    f"{root}: images differ in size ({a!r} is {sa[0]}x{sa[1]}, {b!r} is {sb[0]}x{sb[1]}); "
                    "pass --size HxW to store them all at one size (--crop center, the default, crops "
                    "the centred window of that aspect and area-resizes)"
                )
    if first is None:
        raise SimganError(f"{root}: no image could be read to find the size; pass --size HxW")
    return first[1]


def _decode_chunk(payload, start: int, stop: int, rng) -> tuple[list, list, list]:
    root, files, cfg = payload
    imgs, rows, bad = [], [], []
    for i in range(start, stop):
        path = root / files[i]
        try:
            arr = to_uint8(read_image(path), cfg.color)
        except DECODE_ERRORS as e:
            bad.append((files[i], f"{path}: cannot decode image ({e})"))
            continue
        box = fit_box(arr.shape[0], arr.shape[1], cfg.size, cfg.crop)
        if box is None:
            bad.append(
                (
                    files[i],
                    f"{path}: expected {cfg.size[0]}x{cfg.size[1]} with --crop none, got {arr.shape[0]}x{arr.shape[1]}",
                )
            )
            continue
        imgs.append(crop_resize(arr, box, cfg.size))
        rows.append(i)
    return imgs, rows, bad


def import_folder(src: str | Path, out: str | Path, cfg: FolderConfig) -> int:
    src = Path(src)
    if cfg.crop not in CROPS:
        raise SimganError(f"--crop: expected one of {list(CROPS)}, got {cfg.crop!r}")
    if not src.is_dir():
        raise SimganError(f"{src}: expected a folder of images")
    found = list_images(src)
    if not found:
        raise SimganError(f"{src}: no image files ({', '.join(sorted(IMAGE_EXTS))}) found")
    table = None
    if cfg.labels is not None:
        table = read_labels(Path(cfg.labels))
        listed, present = set(table["file"]), set(found)
        if listed - present:
            raise SimganError(f"{cfg.labels}: labels for images not in {src}: {_names(sorted(listed - present))}")
        if present - listed:
            raise SimganError(
                f"{src}: images without a row in {cfg.labels}: {_names(sorted(present - listed, key=natural_key))}"
            )
        files = list(table["file"])
        unknown = set(cfg.units) - set(table.columns[table.columns != "file"])
        if unknown:
            raise SimganError(f"--units: no label column named {_names(sorted(unknown))} in {cfg.labels}")
    else:
        files = found
        if cfg.units:
            raise SimganError("--units: given without --labels")
    if cfg.size is None:
        cfg = replace(cfg, size=infer_size(src, files, cfg.workers, cfg.chunk))
    domain = cfg.domain or ("synthetic" if table is not None else "real")
    attrs = base_attrs(
        "generic",
        domain,
        "folder",
        image_order="labels table" if table is not None else "natural file order",
        color=bool(cfg.color),
        crop=cfg.crop,
    )
    bad = BadInputs(cfg.skip_bad, cfg.report, fail_fast=False)
    columns = [c for c in table.columns if c != "file"] if table is not None else []
    n = 0
    with DatasetWriter(out, attrs, require_labels=False) as w:
        for imgs, rows, errs in parallel_chunks(
            _decode_chunk, (src, files, cfg), len(files), 0, cfg.workers, cfg.chunk, desc=f"import {src.name}"
        ):
            bad.extend(errs)
            if not rows:
                continue
            block = {"images": np.stack(imgs), FILES_KEY: np.array([files[i] for i in rows], dtype=object)}
            for col in columns:
                block[f"labels/{col}"] = table[col].to_numpy()[rows]
            w.append(block)
            n += len(rows)
        bad.finish(f"images in {src}")
        if n == 0:
            raise SimganError(f"{src}: no image could be decoded")
        for col in columns:
            w.set_group_attrs(f"labels/{col}", unit=cfg.units.get(col, ""))
    return n
