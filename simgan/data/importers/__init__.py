"""Importers of public data sets into the project's HDF5 format, and the helpers they share.

Geometry convention (the format's): a point (x, y) is (column, row) with pixel centres at
integers. Every importer crops with `crop_resize` and maps its landmarks/joints with
`map_points`, so images and labels go through the one transform and cannot drift apart.
"""

from __future__ import annotations

import io
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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

# What reading an image raises for a file that does not decode: Pillow's errors from the header
# read (DecompressionBombError, more than twice Image.MAX_IMAGE_PIXELS, 179M pixels: a 13500x13500
# PNG of a few KB, derives from none of the others), and ValueError where OpenCV returns no image.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# Array transforms that turn an image upright for each EXIF Orientation value (2..8), as viewers
# and Pillow's ImageOps.exif_transpose do: the pixels' own order is the sensor's.
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


# Formats whose EXIF orientation OpenCV 5.1's imdecode applies itself (checked for all 8 values by
# tests/test_importers_opencv.py). Pillow's getexif() on a PNG decodes the whole image to reach an
# eXIf chunk after the pixels (measured 5.6 ms of a 6 ms decode at 240x320), so for these the
# header is read for its size alone.
_CV_ORIENTS = ("JPEG", "PNG")


def image_header(data: bytes) -> tuple[tuple[int, int], str, int]:
    """((H, W) as stored, format, EXIF orientation 1..8) from a file's header, without decoding
    pixels; the orientation is 1 for _CV_ORIENTS formats, which OpenCV turns upright itself.

    Pillow's Image.open is lazy: it reads the header alone (tens of microseconds), and it raises
    DecompressionBombError there for a pixel count past 2 x MAX_IMAGE_PIXELS, a check OpenCV's
    decoders lack (they allocate whatever the header claims). Raises DECODE_ERRORS."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        fmt = im.format or ""
        orientation = 1 if fmt in _CV_ORIENTS else int(im.getexif().get(0x0112, 1) or 1)
        return (h, w), fmt, orientation


def read_image(path: Path) -> np.ndarray:
    """An image decoded fully and upright, as stored: (H, W) grey or (H, W, 3) RGB (alpha dropped),
    uint8, or uint16/int32/float32 for deeper files. Raises DECODE_ERRORS.

    The bytes are read in Python and decoded by cv2.imdecode, so a path with any characters works
    (cv2.imread fails on some). OpenCV applies the EXIF orientation of JPEG and PNG; for other
    formats (TIFF, WebP, ...) it is taken from the header and applied here, as Pillow's
    exif_transpose did before for every format."""
    from simgan.opencv import cv2

    data = Path(path).read_bytes()
    (h, w), fmt, orientation = image_header(data)
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    if fmt not in _CV_ORIENTS:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None:
        raise ValueError(f"OpenCV cannot decode the {h}x{w} {fmt or 'image'} (truncated or damaged?)")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    if orientation in _UPRIGHT:
        arr = np.ascontiguousarray(_UPRIGHT[orientation](arr))
    return arr


def grey_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> L by Pillow's convert("L") (ITU-R 601-2 in 16-bit fixed point), kept so grey
    imports keep today's values: cv2.cvtColor's 14-bit weights differ by 1 on 0.12% of random
    pixels, and the same formula in numpy took 0.8 ms a 240x320 image against Pillow's 0.3 ms."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").convert("L"))


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """A decoded image at 8 bits per sample, as Pillow read it: 16-bit (or 32-bit integer) grey
    scaled by v / 257 rounded (65535 -> 255, exact for 8-bit data stored as 16); 16-bit colour by
    its high byte (Pillow's RGB reading of such PNGs). Float images are refused (ValueError)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        raise ValueError("floating-point images are not supported")
    if arr.ndim == 3:
        return (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr.astype(np.uint8)
    a = arr.astype(np.int64)
    if a.min() < 0 or a.max() > 65535:
        raise ValueError(f"{arr.dtype} grey values outside 0..65535")
    return np.floor(a / 257.0 + 0.5).astype(np.uint8)


def decode_image(path: Path, mode: str | None = None) -> np.ndarray:
    """read_image, optionally converted to `mode`: "L" (grey uint8) or "RGB" (uint8)."""
    try:
        arr = read_image(path)
        if mode == "L":
            arr = to_8bit(arr)
            arr = grey_of_rgb(arr) if arr.ndim == 3 else arr
        elif mode == "RGB":
            arr = to_8bit(arr)
            arr = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
        elif mode is not None:
            raise ValueError(f"decode_image: mode must be None, 'L' or 'RGB', got {mode!r}")
        return arr
    except FileNotFoundError:
        raise SimganError(f"{path}: image file not found") from None
    except DECODE_ERRORS as e:
        raise SimganError(f"{path}: cannot decode image ({e}); expected a readable image file") from None


def crop_resize(img: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int], fill=0) -> np.ndarray:
    """Crop integer box (x0, y0, x1, y1) (may extend past the image: padded with `fill`), then resize
    to out_hw: cv2.INTER_AREA (the exact mean over each output pixel's footprint, partial pixels
    weighted by their share; Pillow's BOX, used before, counted them whole, up to 148 grey levels
    apart on noise at fractional scales) when shrinking, bilinear (cv2.INTER_LINEAR, pixel centres
    aligned) when enlarging. uint8 (H, W[, 3|4]) or float32 (H, W)."""
    if not ((img.dtype == np.uint8 and img.ndim in (2, 3)) or (img.dtype == np.float32 and img.ndim == 2)):
        raise ValueError(f"crop_resize: unsupported image {img.dtype} {img.shape}; expected uint8 or 2-D float32")
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
    return _resize(out, oh, ow)


def _resize(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Each axis by its own rule: area mean where it shrinks, bilinear where it grows. A shrink
    along one axis and growth along the other is two passes, the area one first, since bilinear
    alone samples 2 of every 3+ rows and aliases (Pillow's BILINEAR, used before, antialiased)."""
    from simgan.opencv import cv2

    h, w = img.shape[:2]
    if oh <= h and ow <= w:
        return cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA)
    if oh >= h and ow >= w:
        return cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR)
    if oh < h:
        img = cv2.resize(img, (w, oh), interpolation=cv2.INTER_AREA)
    else:
        img = cv2.resize(img, (ow, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR)


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
    desc: str | None = None,
    unit: str = "file",
) -> Iterator[object]:
    """map_chunks over `fn(payload, start, stop, rng)` yielding results in chunk order.

    The payload (e.g. a list of 70k file names) reaches forked workers by inheritance instead of
    being pickled into every job. With `desc`, a progress bar over the n items goes to stderr (see
    progress_bar), so stdout's success line and the output file stay as they were."""
    if "job" in _CONTEXT:
        raise RuntimeError("parallel_chunks is not re-entrant")
    _CONTEXT["job"] = (fn, payload)
    try:
        with progress_bar(n, desc, unit) as bar:
            for k, result in map_chunks(_dispatch, n, seed, workers=workers, chunk=chunk):
                yield result
                bar.update(min(chunk, n - k * chunk))
    finally:
        _CONTEXT.pop("job", None)


def progress_bar(total: int, desc: str | None, unit: str = "file"):
    """A tqdm bar on stderr; shown on a terminal only (disable=None), so logs, pipes and captured
    stderr get no carriage-return lines. No `desc`: no bar."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if desc else True, dynamic_ncols=True)
