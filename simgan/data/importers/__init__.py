"""Importers of public data sets into the project's HDF5 format, and the helpers they share.

Geometry convention (the format's): a point (x, y) is (column, row) with pixel centres at
integers. Every importer crops with `crop_resize` and maps its landmarks/joints with
`map_points`, so images and labels go through the one transform and cannot drift apart.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from simgan.io import SimganError, write_text_atomic
from simgan.parallel import map_chunks

IMPORTER_VERSION = "1"


def base_attrs(task: str, domain: str, source: str, seed: int = -1, **extra) -> dict:
    return {
        "task": task,
        "domain": domain,
        "source": source,
        "seed": int(seed),
        "generator_version": f"simgan.data.importers.{source} v{IMPORTER_VERSION}",
        **extra,
    }


# --------------------------------------------------------------------------------- gaze conventions


def pitchyaw(gaze: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pitch, yaw) in radians of unit vectors in the MPIIGaze normalized camera frame."""
    g = np.asarray(gaze, dtype=np.float64)
    return np.arcsin(np.clip(-g[..., 1], -1.0, 1.0)), np.arctan2(-g[..., 0], -g[..., 2])


def unit_rows(v: np.ndarray, where: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    bad = ~np.isfinite(norm[..., 0]) | (norm[..., 0] < 1e-6)
    if bad.any():
        raise SimganError(
            f"{where}: gaze vector {v[bad][0]!r} (row {int(np.argmax(bad.ravel()))}) is zero or not finite"
        )
    return (v / norm).astype(np.float32)


def unity_look_to_mpii(look_vec: np.ndarray, where: str) -> np.ndarray:
    """UnityEyes `look_vec` (x, y, z[, 0]) -> MPIIGaze-convention unit gaze vector.

    UnityEyes' x axis points the other way from the MPIIGaze normalized camera's, so x is negated
    (the conversion GazeML and the project reference use); y and z are kept."""
    v = np.array(look_vec, dtype=np.float64)[..., :3]
    v[..., 0] = -v[..., 0]
    return unit_rows(v, where)


# --------------------------------------------------------------------------------- parsing

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_tuple(text, n: int, where: str) -> np.ndarray:
    """Parse a UnityEyes-style string "(x, y, z)" with at least `n` numbers; keep the first n."""
    if not isinstance(text, str) or not re.fullmatch(rf"\s*\(\s*{_NUM}(?:\s*,\s*{_NUM})*\s*\)\s*", text):
        raise SimganError(f"{where}: expected a string like '(x, y, z)', got {text!r}")
    nums = [float(t) for t in re.findall(_NUM, text)]
    if len(nums) < n:
        raise SimganError(f"{where}: expected at least {n} numbers, got {text!r}")
    return np.array(nums[:n], dtype=np.float64)


def natural_key(s: str):
    """Sort key comparing digit runs as numbers, so '10' follows '9' (zero-padded names are unaffected)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s) if t]


# --------------------------------------------------------------------------------- images

# What Pillow raises for a file it cannot decode. DecompressionBombError (more than twice
# Image.MAX_IMAGE_PIXELS, 179M pixels: a 13500x13500 PNG of a few KB) derives from none of the others.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """An image decoded fully (so truncation is caught here, not later) and upright: its EXIF
    Orientation tag (phone and camera JPEGs; PNGs may carry one too) applied, as viewers show it,
    since the pixels' own order is the sensor's. Raises DECODE_ERRORS."""
    with Image.open(path) as im:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        yield im


def decode_image(path: Path, mode: str | None = None) -> np.ndarray:
    """open_image as an array, optionally converted to `mode`."""
    try:
        with open_image(path) as im:
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise SimganError(f"{path}: image file not found") from None
    except DECODE_ERRORS as e:
        raise SimganError(f"{path}: cannot decode image ({e}); expected a readable image file") from None


def _pil_mode(arr: np.ndarray) -> str:
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return "L"
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (3, 4):
        return "RGB" if arr.shape[2] == 3 else "RGBA"
    if arr.dtype == np.float32 and arr.ndim == 2:
        return "F"
    raise ValueError(f"crop_resize: unsupported image {arr.dtype} {arr.shape}")


def crop_resize(img: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int], fill=0) -> np.ndarray:
    """Crop integer box (x0, y0, x1, y1) (may extend past the image: padded with `fill`), then resize
    to out_hw. Downscaling averages areas (Pillow BOX = OpenCV INTER_AREA); upscaling is bilinear."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0, x1 - x0
    if h <= 0 or w <= 0:
        raise ValueError(f"crop_resize: empty box {box}")
    out = np.full((h, w) + img.shape[2:], fill, dtype=img.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, img.shape[0]), max(x0, 0), min(x1, img.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    oh, ow = out_hw
    if (h, w) == (oh, ow):
        return out
    resample = Image.BOX if (h >= oh and w >= ow) else Image.BILINEAR
    res = Image.fromarray(out, mode=_pil_mode(out)).resize((ow, oh), resample)
    return np.asarray(res).astype(img.dtype, copy=False)


def map_points(pts: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Map (..., 2) points (x=col, y=row, centres at integers) through crop_resize(box, out_hw)."""
    x0, y0, x1, y1 = box
    sx, sy = out_hw[1] / (x1 - x0), out_hw[0] / (y1 - y0)
    pts = np.asarray(pts, dtype=np.float64)
    out = np.empty(pts.shape, dtype=np.float64)
    out[..., 0] = (pts[..., 0] - x0 + 0.5) * sx - 0.5
    out[..., 1] = (pts[..., 1] - y0 + 0.5) * sy - 0.5
    return out.astype(np.float32)


def box_around(cx: float, cy: float, w: float, h: float) -> tuple[int, int, int, int]:
    """Integer box of size round(w) x round(h) whose centre is as close to (cx, cy) as pixels allow."""
    iw, ih = max(1, int(round(w))), max(1, int(round(h)))
    x0 = int(math.floor(cx + 0.5 - iw / 2.0))
    y0 = int(math.floor(cy + 0.5 - ih / 2.0))
    return x0, y0, x0 + iw, y0 + ih


def parse_size(text: str, where: str = "--size") -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise SimganError(f"{where}: expected HxW like 35x55, got {text!r}")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------- bad inputs


@dataclass
class BadInputs:
    """Inputs that failed to read; never dropped silently. Without skip_bad they are an error: at
    the first one (fail_fast) or, listing them all, at finish(). With skip_bad they are dropped and
    listed on stderr and in the optional report file."""

    skip_bad: bool = False
    report: Path | None = None
    fail_fast: bool = True
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, error: str) -> None:
        self.items.append((name, error))
        if self.fail_fast and not self.skip_bad:
            raise SimganError(error)

    def extend(self, items) -> None:
        for name, error in items:
            self.add(name, error)

    def finish(self, what: str) -> None:
        verb = "skipped" if self.skip_bad else "found"
        lines = [f"{verb} {len(self.items)} bad {what}"] + [f"{n}\t{e}" for n, e in self.items]
        if self.report is not None:
            write_text_atomic(self.report, "\n".join(lines) + "\n")
        if self.items:
            print("\n".join(lines), file=sys.stderr)
            if not self.skip_bad:
                where = f" (all listed in {self.report})" if self.report is not None else ""
                raise SimganError(
                    f"{len(self.items)} bad {what}{where}, first: {self.items[0][1]}; pass --skip-bad to leave them out"
                )


# --------------------------------------------------------------------------------- parallel work

_CONTEXT: dict = {}


def _dispatch(start: int, stop: int, rng: np.random.Generator):
    fn, payload = _CONTEXT["job"]
    return fn(payload, start, stop, rng)


def parallel_chunks(
    fn: Callable[[object, int, int, np.random.Generator], object],
    payload,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    chunk: int = 256,
) -> Iterator[object]:
    """map_chunks over `fn(payload, start, stop, rng)` yielding results in chunk order.

    The payload (e.g. a list of 70k file names) reaches forked workers by inheritance instead of
    being pickled into every job."""
    if "job" in _CONTEXT:
        raise RuntimeError("parallel_chunks is not re-entrant")
    _CONTEXT["job"] = (fn, payload)
    try:
        for _, result in map_chunks(_dispatch, n, seed, workers=workers, chunk=chunk):
            yield result
    finally:
        _CONTEXT.pop("job", None)
