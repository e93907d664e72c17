"""NYU Hand Pose `dataset/{train,test}/` -> synthetic (synthdepth) and real (masked depth) hand sets.

Pre-processing (the paper's, with the parts it leaves open fixed here):
1. Decode the depth PNGs: millimetres = G * 256 + B (R unused), for `depth_K_*` and `synthdepth_K_*`.
2. The synthetic depth is 0 off the hand, so `synth > 0` is the hand mask; the real depth is kept
   only inside it (the paper's crop of the real depth with the synthetic one). Real pixels inside
   the mask that read 0 are sensor holes.
3. Square box: the bounding box of the mask united with the 14 evaluated joints (fingertips the
   render misses stay in view), side = (1 + 2 * pad) * its longer edge, centred on it; parts
   outside the frame count as background.
4. Normalize depth to the hand: d_centre = median depth of the image's hand pixels,
   d_norm = clip((d - d_centre) / half_range_mm, -1, 1); background and holes = 1.0 (far).
5. Area-resize the box to size x size (paper 224; default 64); joints (u, v) mapped through the same
   transform, joint d normalized with the same d_centre; mask resized and thresholded at 1/2.
Each file also carries labels/frame (1-based NYU frame number), labels/d_centre_mm and
labels/crop_box (x0, y0, x1, y1 in source pixels) so predictions map back to the source frame.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from simgan.data.format import DatasetWriter
from simgan.data.importers import (
    BadInputs,
    base_attrs,
    box_around,
    crop_resize,
    decode_image,
    map_points,
    parallel_chunks,
)
from simgan.io import SimganError

EVAL_JOINTS = (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32)


@dataclass
class NYUConfig:
    split: str = "train"  # train | test
    camera: int = 1  # 1 = front
    size: int = 64
    half_range_mm: float = 150.0
    pad: float = 0.15
    limit: int | None = None
    workers: int | None = None
    chunk: int = 128
    skip_bad: bool = False
    report: Path | None = None


def decode_depth(path: Path) -> np.ndarray:
    """float32 millimetres from an NYU depth PNG."""
    rgb = decode_image(path)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise SimganError(f"{path}: expected an 8-bit RGB depth PNG (mm = G*256 + B), got {rgb.dtype} {rgb.shape}")
    return (rgb[..., 1].astype(np.uint16) * 256 + rgb[..., 2]).astype(np.float32)


def encode_depth(mm: np.ndarray) -> np.ndarray:
    """The inverse of decode_depth (R = 0), for fixtures and round-trip checks."""
    d = np.asarray(mm).astype(np.uint16)
    return np.stack([np.zeros_like(d, np.uint8), (d >> 8).astype(np.uint8), (d & 255).astype(np.uint8)], -1)


def load_joints(mat_path: Path, camera: int) -> np.ndarray:
    """joint_uvd of one camera, (N, 36, 3) float64."""
    if not mat_path.is_file():
        raise SimganError(f"{mat_path}: not found; expected NYU joint_data.mat")
    try:
        uvd = scipy.io.loadmat(str(mat_path), variable_names=["joint_uvd"]).get("joint_uvd")
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        import h5py

        with h5py.File(mat_path, "r") as f:
            uvd = f["joint_uvd"][()].T if "joint_uvd" in f else None
    except Exception as e:
        raise SimganError(f"{mat_path}: cannot read MATLAB file ({type(e).__name__}: {e})") from None
    if uvd is None:
        raise SimganError(f"{mat_path}: key 'joint_uvd' missing")
    if uvd.ndim != 4 or uvd.shape[2:] != (36, 3) or not 1 <= camera <= uvd.shape[0]:
        raise SimganError(
            f"{mat_path}: key 'joint_uvd': expected [3 cameras, N, 36, 3] with camera {camera}, got {uvd.shape}"
        )
    return np.asarray(uvd[camera - 1], dtype=np.float64)


def find_split(src: Path, split: str) -> Path:
    for cand in (src / split, src / "dataset" / split, src):
        if (cand / "joint_data.mat").is_file():
            return cand
    raise SimganError(f"{src}: expected NYU '{split}/joint_data.mat' (or dataset/{split}/) under it")


def hand_box(mask: np.ndarray, uv: np.ndarray, pad: float) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    x0, x1 = min(xs.min(), uv[:, 0].min()), max(xs.max(), uv[:, 0].max())
    y0, y1 = min(ys.min(), uv[:, 1].min()), max(ys.max(), uv[:, 1].max())
    side = (1 + 2 * pad) * (max(x1 - x0, y1 - y0) + 1)  # +1: both end pixels are inside
    return box_around((x0 + x1) / 2, (y0 + y1) / 2, side, side)


def normalize_crop(depth: np.ndarray, valid: np.ndarray, uvd: np.ndarray, box, cfg: NYUConfig):
    """Depth and joints normalized to the hand's median depth, cropped and resized."""
    centre = float(np.median(depth[valid]))
    norm = np.ones(depth.shape, np.float32)
    norm[valid] = np.clip((depth[valid] - centre) / cfg.half_range_mm, -1.0, 1.0)
    img = np.clip(crop_resize(norm, box, (cfg.size, cfg.size), fill=1.0), -1.0, 1.0)
    joints = np.empty((len(uvd), 3), np.float32)
    joints[:, :2] = map_points(uvd[:, :2], box, (cfg.size, cfg.size))
    joints[:, 2] = np.clip((uvd[:, 2] - centre) / cfg.half_range_mm, -1.0, 1.0)
    return img, joints, centre


def _frame_chunk(payload, start: int, stop: int, rng) -> tuple[dict, list]:
    folder, uvd_all, frames, cfg = payload
    out = {
        dom: {"depth": [], "joints": [], "mask": [], "frame": [], "centre": [], "box": []}
        for dom in ("synthetic", "real")
    }
    bad = []
    for i in frames[start:stop]:
        tag = f"{cfg.camera}_{i + 1:07d}.png"
        real_path, synth_path = folder / f"depth_{tag}", folder / f"synthdepth_{tag}"
        try:
            real, synth = decode_depth(real_path), decode_depth(synth_path)
            if real.shape != synth.shape:
                raise SimganError(f"{real_path}: size {real.shape} differs from {synth_path.name} {synth.shape}")
            mask = synth > 0
            if not mask.any():
                raise SimganError(f"{synth_path}: synthetic depth is empty, no hand mask")
            if not (mask & (real > 0)).any():
                raise SimganError(f"{real_path}: no valid depth inside the hand mask")
        except SimganError as e:
            bad.append((f"frame {i + 1}", str(e)))
            continue
        uvd = uvd_all[i][list(EVAL_JOINTS)]
        box = hand_box(mask, uvd, cfg.pad)
        m = crop_resize(mask.astype(np.uint8) * 255, box, (cfg.size, cfg.size)) >= 128
        for dom, depth, valid in (("synthetic", synth, mask), ("real", real, mask & (real > 0))):
            img, joints, centre = normalize_crop(depth, valid, uvd, box, cfg)
            o = out[dom]
            o["depth"].append(img)
            o["joints"].append(joints)
            o["mask"].append(m.astype(np.uint8))
            o["frame"].append(i + 1)
            o["centre"].append(centre)
            o["box"].append(box)
    return out, bad


def import_nyu(
    src: str | Path, out_synthetic: str | Path | None, out_real: str | Path | None, cfg: NYUConfig | None = None
) -> int:
    """Write the synthetic and/or real hand data sets of one split; returns frames written."""
    cfg = cfg or NYUConfig()
    if out_synthetic is None and out_real is None:
        raise SimganError("nyu: expected --out-synthetic and/or --out-real")
    if cfg.split not in ("train", "test"):
        raise SimganError(f"--split: expected train or test, got {cfg.split!r}")
    if cfg.size < 8 or cfg.half_range_mm <= 0 or cfg.pad < 0:
        raise SimganError(
            f"nyu: expected size >= 8, half_range_mm > 0, pad >= 0; got {cfg.size}, {cfg.half_range_mm}, {cfg.pad}"
        )
    folder = find_split(Path(src), cfg.split)
    uvd = load_joints(folder / "joint_data.mat", cfg.camera)
    frames = list(range(len(uvd)))[: cfg.limit]
    bad = BadInputs(cfg.skip_bad, cfg.report)
    common = dict(
        split=cfg.split,
        camera=cfg.camera,
        half_range_mm=float(cfg.half_range_mm),
        pad=float(cfg.pad),
        joint_indices=",".join(map(str, EVAL_JOINTS)),
    )
    targets = [(dom, path) for dom, path in (("synthetic", out_synthetic), ("real", out_real)) if path is not None]
    n = 0
    # ExitStack: if one writer fails (even while validating on close) the other's temp file goes too.
    with contextlib.ExitStack() as stack:
        writers = {
            dom: stack.enter_context(DatasetWriter(path, base_attrs("hand", dom, "nyu", **common)))
            for dom, path in targets
        }
        payload = (folder, uvd, frames, cfg)
        for res, errs in parallel_chunks(
            _frame_chunk, payload, len(frames), 0, cfg.workers, cfg.chunk, desc="import NYU", unit="frame"
        ):
            bad.extend(errs)
            for dom, w in writers.items():
                o = res[dom]
                if o["frame"]:
                    w.append(
                        {
                            "depth": np.stack(o["depth"]),
                            "joints": np.stack(o["joints"]),
                            "mask": np.stack(o["mask"]),
                            "labels/frame": np.array(o["frame"], np.int32),
                            "labels/d_centre_mm": np.array(o["centre"], np.float32),
                            "labels/crop_box": np.array(o["box"], np.int32),
                        }
                    )
            n += len(res["synthetic"]["frame"])
        if n == 0:
            raise SimganError(f"{folder}: no usable frames")
        for w in writers.values():
            w.set_group_attrs("labels/frame", unit="NYU frame number (1-based)")
            w.set_group_attrs("labels/d_centre_mm", unit="mm")
            w.set_group_attrs("labels/crop_box", unit="px in the source frame (x0, y0, x1, y1)")
    bad.finish("NYU frames")
    return n
