"""MPIIGaze `Data/Normalized/pNN/dayNN.mat` -> real gaze data set.

* Both eyes are pooled: right eyes are mirrored (image flipped left-right, gaze x negated, i.e.
  yaw negated, pitch kept; head rotation R -> M R M with M = diag(-1, 1, 1)), so every stored eye
  looks like a left eye. `--no-mirror` keeps right eyes as they are; `--eyes` picks one side.
* 36x60 -> 35x55: `fit="crop"` (default) takes the centred 36x57 window of the 55:35 aspect and
  area-resizes it (no shape distortion); `fit="resize"` squeezes the whole 36x60.
* head_pose: the stored Rodrigues vector as (pitch, yaw, roll) degrees of the head's axes in the
  normalized camera: pitch = asin(R[1,2]), yaw = atan2(R[0,2], R[2,2]), roll = atan2(R[1,0], R[0,0]).
* subset: "all"; "eval" = the Evaluation Subset lists ("day01/0005.jpg left" lines per person,
  1,500 + 1,500 per person), the labelled test set; "rest" = everything not in it (the unlabeled
  real training pool without test leakage).
* labels/person (pNN -> NN), labels/day (dayNN -> NN) and labels/eye (0 left, 1 right, before
  mirroring) allow person-wise evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.spatial.transform import Rotation

from simgan.data.format import GAZE_IMAGE_SHAPE, DatasetWriter
from simgan.data.importers import base_attrs, box_around, crop_resize, natural_key, parallel_chunks, unit_rows
from simgan.io import SimganError

SOURCE_HW = (36, 60)
_MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclass
class MPIIGazeConfig:
    subset: str = "all"  # all | eval | rest
    persons: list[str] | None = None  # e.g. ["p00", "p01"]; None = all
    eyes: str = "both"  # both | left | right
    mirror_right: bool = True
    fit: str = "crop"  # crop | resize
    labels: bool = True  # False writes an unlabeled real file (images only)
    workers: int | None = None


def fit_box(fit: str) -> tuple[int, int, int, int]:
    h, w = SOURCE_HW
    if fit == "resize":
        return 0, 0, w, h
    if fit == "crop":
        return box_around((w - 1) / 2, (h - 1) / 2, h * GAZE_IMAGE_SHAPE[1] / GAZE_IMAGE_SHAPE[0], h)
    raise SimganError(f"mpiigaze: parameter 'fit': expected 'crop' or 'resize', got {fit!r}")


def head_pose_deg(rotvec: np.ndarray, mirror: bool) -> np.ndarray:
    R = Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64).reshape(-1, 3)).as_matrix()
    if mirror:
        R = _MIRROR @ R @ _MIRROR
    pitch = np.arcsin(np.clip(R[:, 1, 2], -1, 1))
    yaw = np.arctan2(R[:, 0, 2], R[:, 2, 2])
    roll = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    return np.degrees(np.stack([pitch, yaw, roll], axis=1)).astype(np.float32)


def find_normalized(src: Path) -> Path:
    for cand in (src / "Data" / "Normalized", src / "Normalized", src):
        if cand.is_dir() and any(cand.glob("p[0-9]*/day*.mat")):
            return cand
    raise SimganError(f"{src}: expected an MPIIGaze folder with Data/Normalized/pNN/dayNN.mat files")


def read_eval_subset(src: Path, persons: list[str]) -> set[tuple[str, str, str, str]]:
    """{(person, day, file name, side)} from `Evaluation Subset/**/pNN.txt`."""
    lists = {p.stem: p for p in src.glob("**/Evaluation Subset/**/p[0-9]*.txt")}
    lists.update({p.stem: p for p in (src / "Evaluation Subset").glob("**/p[0-9]*.txt")})
    out = set()
    for person in persons:
        if person not in lists:
            raise SimganError(f"{src}: 'Evaluation Subset/.../{person}.txt' not found (needed for subset eval/rest)")
        for lineno, line in enumerate(lists[person].read_text().splitlines(), 1):
            if not line.strip():
                continue
            m = re.fullmatch(r"\s*(day\d+)/(\S+)\s+(left|right)\s*", line)
            if not m:
                raise SimganError(f"{lists[person]}:{lineno}: expected 'dayNN/NNNN.jpg left|right', got {line!r}")
            out.add((person, m.group(1), m.group(2), m.group(3)))
    return out


def _side(mat_path: Path, data, side: str) -> dict[str, np.ndarray]:
    try:
        s = getattr(data, side)
        img, gaze, pose = np.asarray(s.image), np.asarray(s.gaze, np.float64), np.asarray(s.pose, np.float64)
    except AttributeError as e:
        raise SimganError(f"{mat_path}: key 'data.{side}': expected fields image, gaze, pose ({e})") from None
    img = img[None] if img.ndim == 2 else img  # squeeze_me drops N when a day has one image
    if img.ndim != 3 or img.shape[1:] != SOURCE_HW or img.dtype != np.uint8:
        raise SimganError(
            f"{mat_path}: key 'data.{side}.image': expected uint8 (N, 36, 60), got {img.dtype} {img.shape}"
        )
    n = img.shape[0]
    if gaze.size != 3 * n or pose.size != 3 * n:
        raise SimganError(f"{mat_path}: key 'data.{side}': gaze/pose rows differ from the {n} images")
    return {"image": img, "gaze": gaze.reshape(n, 3), "pose": pose.reshape(n, 3)}


def load_day(mat_path: Path) -> tuple[dict, list[str]]:
    try:
        m = scipy.io.loadmat(str(mat_path), struct_as_record=False, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for damaged files
        raise SimganError(f"{mat_path}: cannot read MATLAB file ({type(e).__name__}: {e})") from None
    if "data" not in m:
        raise SimganError(f"{mat_path}: key 'data' missing; expected data.left / data.right")
    sides = {side: _side(mat_path, m["data"], side) for side in ("left", "right")}
    n = len(sides["left"]["image"])
    if len(sides["right"]["image"]) != n:
        raise SimganError(f"{mat_path}: data.left and data.right hold different numbers of images")
    names = [str(f).replace("\\", "/").rsplit("/", 1)[-1] for f in np.atleast_1d(m.get("filenames", []))]
    if "filenames" in m and len(names) != n:
        raise SimganError(f"{mat_path}: key 'filenames': {len(names)} names for {n} images")
    return sides, names


def _day_chunk(payload, start: int, stop: int, rng) -> dict:
    days, cfg, eval_set = payload
    box = fit_box(cfg.fit)
    parts = []
    for person, mat_path in days[start:stop]:
        sides, names = load_day(mat_path)
        day = mat_path.stem
        for eye, side in enumerate(("left", "right")):
            if cfg.eyes not in ("both", side):
                continue
            if eval_set is not None:
                if not names:
                    raise SimganError(f"{mat_path}: key 'filenames' missing; needed to match the Evaluation Subset")
                inside = np.array([(person, day, f, side) in eval_set for f in names], bool)
                sel = inside if cfg.subset == "eval" else ~inside
            else:
                sel = np.ones(len(sides[side]["image"]), bool)
            if not sel.any():
                continue
            img, gaze = sides[side]["image"][sel], sides[side]["gaze"][sel]
            mirror = side == "right" and cfg.mirror_right
            if mirror:
                img, gaze = img[:, :, ::-1], gaze * np.array([-1.0, 1.0, 1.0])
            k = int(sel.sum())
            parts.append(
                {
                    "images": np.stack([crop_resize(np.ascontiguousarray(im), box, GAZE_IMAGE_SHAPE) for im in img]),
                    "gaze": unit_rows(gaze, f"{mat_path}: key 'data.{side}.gaze'"),
                    "head_pose": head_pose_deg(sides[side]["pose"][sel], mirror),
                    "labels/person": np.full(k, int(person[1:]), np.int16),
                    "labels/day": np.full(k, int(day[3:]) if day[3:].isdigit() else -1, np.int16),
                    "labels/eye": np.full(k, eye, np.uint8),
                    "_found": [(person, day, f, side) for f in np.array(names, object)[sel]] if names else [],
                }
            )
    return parts


def import_mpiigaze(src: str | Path, out: str | Path, cfg: MPIIGazeConfig | None = None) -> int:
    cfg = cfg or MPIIGazeConfig()
    if cfg.subset not in ("all", "eval", "rest"):
        raise SimganError(f"mpiigaze: parameter 'subset': expected all|eval|rest, got {cfg.subset!r}")
    if cfg.eyes not in ("both", "left", "right"):
        raise SimganError(f"mpiigaze: parameter 'eyes': expected both|left|right, got {cfg.eyes!r}")
    fit_box(cfg.fit)
    src = Path(src)
    norm = find_normalized(src)
    available = sorted((p.name for p in norm.glob("p[0-9]*") if p.is_dir()), key=natural_key)
    persons = cfg.persons or available
    missing = [p for p in persons if p not in available]
    if missing:
        raise SimganError(f"--persons: {missing} not found under {norm} (have {available})")
    days = [(p, d) for p in persons for d in sorted((norm / p).glob("day*.mat"), key=lambda q: natural_key(q.name))]
    eval_set = read_eval_subset(src, persons) if cfg.subset != "all" else None
    attrs = base_attrs(
        "gaze",
        "real",
        "mpiigaze",
        subset=cfg.subset,
        persons=",".join(persons),
        eyes=cfg.eyes,
        mirror_right=bool(cfg.mirror_right),
        fit=cfg.fit,
    )
    units = {"labels/person": "id", "labels/day": "id", "labels/eye": "0=left,1=right"}
    n, found = 0, set()
    with DatasetWriter(out, attrs, require_labels=cfg.labels) as w:
        for parts in parallel_chunks(
            _day_chunk, (days, cfg, eval_set), len(days), 0, cfg.workers, chunk=4, desc="import MPIIGaze", unit="day"
        ):
            for part in parts:
                found.update(part.pop("_found"))
                if not cfg.labels:
                    part = {"images": part["images"]}
                w.append(part)
                n += len(part["images"])
        if cfg.subset == "eval":
            wanted = {e for e in eval_set if cfg.eyes in ("both", e[3])}
            lost = sorted(wanted - found)
            if lost:
                p, d, f, s = lost[0]
                raise SimganError(
                    f"{src}: {len(lost)} Evaluation Subset entries have no image, "
                    f"e.g. {p} '{d}/{f} {s}' (not in {norm / p / (d + '.mat')} filenames)"
                )
        if n == 0:
            raise SimganError(f"{src}: no images selected (persons {persons}, subset {cfg.subset}, eyes {cfg.eyes})")
        if cfg.labels:
            for key, unit in units.items():
                w.set_group_attrs(key, unit=unit)
    return n
