"""UnityEyes renders (`N.jpg` + `N.json` per image) -> synthetic gaze data set.

The source is UnityEyes' output folder (renders in its `imgs/`) or `imgs/` itself.

Crop rule (the paper gives none; this is the common one, configurable): the centre of the
interior-margin bounding box is the crop centre; the crop is `crop_scale` (default 2.5) eye widths
wide, where the eye width is the horizontal extent of `interior_margin_2d`, and 35/55 of that high
(the stored aspect), converted to grayscale (Pillow "L", ITU-R 601 luma) and area-resized to 35x55.

Labels:
* gaze: `eye_details.look_vec` with x negated (UnityEyes' x axis is opposite to the MPIIGaze
  normalized camera's), normalized to unit length;
* landmarks: `interior_margin_2d`, `caruncle_2d`, `iris_2d` concatenated in that order (the file
  attr `landmark_layout` gives the index ranges), y flipped (row = height - y), mapped into the crop;
* pupil: the mean of the iris landmarks (the iris centre);
* head_pose: `head_pose` "(pitch, yaw, roll)" degrees, each wrapped to [-180, 180).

Optional: keep only a head-pose range; resample (seeded, with replacement) so that the 2-D
(pitch, yaw) gaze histogram is uniform or matches the gaze of a target data set file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simgan.data.format import GAZE_IMAGE_SHAPE, DatasetWriter, open_dataset
from simgan.data.importers import (
    BadInputs,
    base_attrs,
    box_around,
    crop_resize,
    decode_image,
    map_points,
    natural_key,
    parallel_chunks,
    parse_tuple,
    pitchyaw,
    unity_look_to_mpii,
)
from simgan.io import SimganError

LANDMARK_KEYS = ("interior_margin_2d", "caruncle_2d", "iris_2d")
RENDERS_DIR = "imgs"  # where UnityEyes writes its renders, below its output folder


@dataclass
class UnityEyesConfig:
    crop_scale: float = 2.5
    head_pitch: tuple[float, float] | None = None  # keep only poses within [min, max] degrees
    head_yaw: tuple[float, float] | None = None
    resample: str | None = None  # None | "uniform" | path of a gaze data set file to match
    resample_n: int | None = None  # images drawn when resampling (default: as many as kept)
    bins: int = 12  # per axis of the (pitch, yaw) histogram
    seed: int = 0
    limit: int | None = None  # first N renders only (quick looks)
    workers: int | None = None
    chunk: int = 256
    skip_bad: bool = False
    report: Path | None = None


def _wrap_deg(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def parse_record(json_path: Path) -> dict:
    """The labels of one render, in source pixel coordinates (y still measured from the bottom)."""
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SimganError(f"{json_path}: cannot read UnityEyes JSON ({e})") from None
    if not isinstance(meta, dict):
        raise SimganError(f"{json_path}: expected a JSON object")

    def get(*keys):
        node = meta
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise SimganError(f"{json_path}: key '{'.'.join(keys)}' missing")
            node = node[k]
        return node

    rec = {}
    for key in LANDMARK_KEYS:
        pts = get(key)
        if not isinstance(pts, list) or not pts:
            raise SimganError(f"{json_path}: key '{key}': expected a non-empty list of '(x, y, z)' strings")
        rec[key] = np.stack([parse_tuple(p, 2, f"{json_path}: key '{key}'") for p in pts])
    rec["look_vec"] = parse_tuple(get("eye_details", "look_vec"), 3, f"{json_path}: key 'eye_details.look_vec'")
    rec["head_pose"] = _wrap_deg(parse_tuple(get("head_pose"), 3, f"{json_path}: key 'head_pose'"))
    return rec


def _parse_chunk(paths: list[Path], start: int, stop: int, rng) -> tuple[list, list]:
    recs, bad = [], []
    for p in paths[start:stop]:
        try:
            recs.append((p, parse_record(p)))
        except SimganError as e:
            bad.append((str(p), str(e)))
    return recs, bad


def _crop_chunk(payload, start: int, stop: int, rng) -> tuple[dict, list]:
    items, scale = payload
    h_out, w_out = GAZE_IMAGE_SHAPE
    out = {"images": [], "landmarks": [], "pupil": [], "keep": []}
    bad = []
    for i in range(start, stop):
        json_path, rec = items[i]
        jpg = json_path.with_suffix(".jpg")
        try:
            img = decode_image(jpg, "L")
        except SimganError as e:
            bad.append((str(jpg), str(e)))
            continue
        pts = np.concatenate([rec[k] for k in LANDMARK_KEYS]).copy()
        pts[:, 1] = img.shape[0] - pts[:, 1]  # UnityEyes y runs up from the bottom edge
        margin = pts[: len(rec[LANDMARK_KEYS[0]])]
        lo, hi = margin.min(axis=0), margin.max(axis=0)
        eye_w = float(hi[0] - lo[0])
        if eye_w <= 0:
            bad.append((str(json_path), f"{json_path}: key 'interior_margin_2d': zero eye width"))
            continue
        w = scale * eye_w
        box = box_around((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, w, w * h_out / w_out)
        out["images"].append(crop_resize(img, box, GAZE_IMAGE_SHAPE))
        lm = map_points(pts, box, GAZE_IMAGE_SHAPE)
        out["landmarks"].append(lm)
        n_iris = len(rec["iris_2d"])
        out["pupil"].append(lm[-n_iris:].mean(axis=0))
        out["keep"].append(i)
    return out, bad


def _resample(gaze: np.ndarray, cfg: UnityEyesConfig) -> np.ndarray:
    """Indices (sorted) drawn with replacement so the (pitch, yaw) histogram follows the target."""
    rng = np.random.default_rng(cfg.seed)
    pitch, yaw = pitchyaw(gaze)
    edges_p = np.linspace(pitch.min(), pitch.max() + 1e-9, cfg.bins + 1)
    edges_y = np.linspace(yaw.min(), yaw.max() + 1e-9, cfg.bins + 1)
    src, _, _ = np.histogram2d(pitch, yaw, [edges_p, edges_y])
    if cfg.resample == "uniform":
        target = (src > 0).astype(np.float64)
    else:
        with open_dataset(cfg.resample) as ds:
            if ds.task != "gaze":
                raise SimganError(f"{cfg.resample}: resample target must be a gaze data set, got task '{ds.task}'")
            tp, ty = pitchyaw(ds["gaze"])
        target, _, _ = np.histogram2d(tp, ty, [edges_p, edges_y])
        lost = 1.0 - target[src > 0].sum() / max(1.0, float(len(tp)))
        if lost > 0:
            print(
                f"unityeyes: {lost:.1%} of the target's gaze falls where the renders have none; "
                "that part of the histogram cannot be matched",
                file=sys.stderr,
            )
        target = np.where(src > 0, target, 0.0)
        if target.sum() == 0:
            raise SimganError(f"{cfg.resample}: its gaze range does not overlap the renders' at all")
    bp = np.clip(np.digitize(pitch, edges_p) - 1, 0, cfg.bins - 1)
    by = np.clip(np.digitize(yaw, edges_y) - 1, 0, cfg.bins - 1)
    w = target[bp, by] / target.sum() / src[bp, by]
    n = cfg.resample_n or len(gaze)
    return np.sort(rng.choice(len(gaze), size=n, replace=True, p=w / w.sum()))


def render_folder(src: str | Path) -> Path:
    """The folder holding the renders: `src` itself, or `src/imgs` when `src` is UnityEyes' own
    output folder (UnityEyes writes imgs/N.jpg + N.json beside its executable)."""
    src = Path(src)
    if not src.is_dir():
        raise SimganError(f"{src}: expected UnityEyes' output folder (holding imgs/) or imgs/ itself")
    if not any(src.glob("*.json")) and (src / RENDERS_DIR).is_dir():
        src = src / RENDERS_DIR
    if not any(src.glob("*.json")):
        raise SimganError(
            f"{src}: no UnityEyes *.json files found; expected N.jpg + N.json here or in {RENDERS_DIR}/ below it"
        )
    return src


def import_unityeyes(src: str | Path, out: str | Path, cfg: UnityEyesConfig | None = None) -> int:
    """Write the synthetic gaze data set; returns the number of images written."""
    cfg = cfg or UnityEyesConfig()
    src = render_folder(src)
    paths = sorted(src.glob("*.json"), key=lambda p: natural_key(p.stem))[: cfg.limit]
    bad = BadInputs(cfg.skip_bad, cfg.report)
    items = []
    for recs, errs in parallel_chunks(
        _parse_chunk, paths, len(paths), 0, cfg.workers, cfg.chunk, desc="import UnityEyes: labels"
    ):
        bad.extend(errs)
        items += recs
    counts = {k: len(items[0][1][k]) for k in LANDMARK_KEYS} if items else {}
    consistent = []
    for p, rec in items:
        if any(len(rec[k]) != counts[k] for k in LANDMARK_KEYS):
            bad.add(
                str(p),
                f"{p}: landmark counts {[len(rec[k]) for k in LANDMARK_KEYS]} differ from the "
                f"first render's {list(counts.values())} for {list(LANDMARK_KEYS)}",
            )
        else:
            consistent.append((p, rec))
    items = consistent
    head = np.array([rec["head_pose"] for _, rec in items]).reshape(-1, 3)
    keep = np.ones(len(items), bool)
    for axis, rng_ in ((0, cfg.head_pitch), (1, cfg.head_yaw)):
        if rng_ is not None:
            keep &= (head[:, axis] >= rng_[0]) & (head[:, axis] <= rng_[1])
    items = [it for it, k in zip(items, keep) if k]
    if not items:
        raise SimganError(f"{src}: no usable renders left (bad inputs or head-pose filter removed all)")
    gaze = unity_look_to_mpii(np.array([rec["look_vec"] for _, rec in items]), f"{src}: eye_details.look_vec")
    if cfg.resample:
        idx = _resample(gaze, cfg)
        items, gaze = [items[i] for i in idx], gaze[idx]
    layout, k0 = [], 0
    for k in LANDMARK_KEYS:
        layout.append(f"{k}:{k0}-{k0 + counts[k] - 1}")
        k0 += counts[k]
    attrs = base_attrs(
        "gaze",
        "synthetic",
        "unityeyes",
        cfg.seed if cfg.resample else -1,
        landmark_layout=",".join(layout),
        crop_scale=float(cfg.crop_scale),
        resample=str(cfg.resample or "none"),
    )
    n = 0
    with DatasetWriter(out, attrs) as w:
        for res, errs in parallel_chunks(
            _crop_chunk, (items, cfg.crop_scale), len(items), 0, cfg.workers, cfg.chunk, desc="import UnityEyes"
        ):
            bad.extend(errs)
            rows = res.pop("keep")
            if not rows:
                continue
            w.append(
                {
                    "images": np.stack(res["images"]),
                    "gaze": gaze[rows],
                    "pupil": np.stack(res["pupil"]).astype(np.float32),
                    "landmarks": np.stack(res["landmarks"]),
                    "head_pose": np.stack([items[i][1]["head_pose"] for i in rows]).astype(np.float32),
                }
            )
            n += len(rows)
        if n == 0:
            raise SimganError(f"{src}: every image failed to decode")
    bad.finish("UnityEyes renders")
    return n
