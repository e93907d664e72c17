"""OpenCV against the Pillow/scipy/torch/numpy paths it replaced or was weighed against: speed ratio
(old / OpenCV, medians, interleaved in one process) and whether the outputs are identical, on the
simulators' own inputs and on importer-sized files written here, so it runs offline.

    .venv/bin/python -m benchmarks.bench_opencv [--n-eyes 512] [--n-hands 128] [--n-files 100] [--repeats 5]

An op is adopted only where its output is byte-identical (simulators: the embedded data must not
change) or, in the importers, where OpenCV is the better definition (exact area means).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmarks.common import interleaved, load, machine, summary, table, threads, write_result
from simgan.opencv import cv2

# ------------------------------------------------------------------ the paths measured against


def pillow_jpeg(images: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """simgan.sim.eyes._jpeg before OpenCV."""
    out = np.empty_like(images)
    for i, (im, q) in enumerate(zip(images, quality)):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("L"))
    return out


def cv_equalize(images: np.ndarray) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(im)) for im in images])


def scipy_min_max(z: np.ndarray):
    from scipy import ndimage

    return ndimage.minimum_filter(z, size=(1, 3, 3), mode="nearest"), ndimage.maximum_filter(
        z, size=(1, 3, 3), mode="nearest"
    )


def cv_blur(img: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    return np.stack([cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REPLICATE) for x, k in zip(img, kernels)])


def torch_blur(img, kernels):
    """simgan.sim.eyes._camera's blur: one grouped conv2d over the batch, edges replicated."""
    import torch
    import torch.nn.functional as F

    k = torch.from_numpy(kernels)[:, None]
    pad = k.shape[-1] // 2
    x = F.pad(torch.from_numpy(img)[None], (pad, pad, pad, pad), mode="replicate")
    with torch.no_grad():
        return F.conv2d(x, k, groups=len(img))[0].numpy()


def pillow_decode_grey(path: Path) -> np.ndarray:
    """The importers' decode before OpenCV: load, EXIF transpose, convert to L."""
    with Image.open(path) as im:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return np.asarray(im.convert("L"))


def pillow_resize(img: np.ndarray, out_hw) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((out_hw[1], out_hw[0]), Image.BOX))


# ------------------------------------------------------------------ inputs


def eye_inputs(n: int):
    """Real-domain eyes at the JPEG step's input (camera output) and the blur's input, with their
    per-image JPEG qualities and blur kernels, captured from the simulator itself."""
    import torch

    from simgan.sim import eyes

    seen = {}
    camera, jpeg = eyes._camera, eyes._jpeg

    def keep_camera(img, p, rng):
        seen.setdefault("blur_in", []).append(img.numpy().copy())
        seen.setdefault("kernels", []).append(eyes._blur_kernels(p)[:, 0].numpy().copy())
        return camera(img, p, rng)

    def keep_jpeg(images, quality):
        seen.setdefault("jpeg_in", []).append(images.copy())
        seen.setdefault("quality", []).append(np.asarray(quality).copy())
        return jpeg(images, quality)

    eyes._camera, eyes._jpeg = keep_camera, keep_jpeg
    try:
        with torch.no_grad():
            eyes.render_eyes(n, seed=11, domain="real", workers=1)
    finally:
        eyes._camera, eyes._jpeg = camera, jpeg
    return {k: np.concatenate(v) for k, v in seen.items()}


def hand_depth(n: int) -> np.ndarray:
    """Clean depth in mm as the Kinect model sees it (background replaced by a wall)."""
    from simgan.sim import hands

    poses = hands.sample_poses(n, np.random.default_rng(5), "real")
    _, full, _, _ = hands.render_poses(poses, 64, forearm=True)
    return np.where(np.isfinite(full), full, 2000.0).astype(np.float32)


def write_files(tmp: Path, n: int, hw=(240, 320)) -> dict[str, list[Path]]:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    out = {"jpeg": [], "png": []}
    for i in range(n):
        base = np.stack([(xx + 3 * i) % 256, (yy + i) % 256, (xx + yy) % 256], -1)
        img = np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)
        for kind, suffix, kw in (("jpeg", ".jpg", {"quality": 90}), ("png", ".png", {})):
            path = tmp / f"{i}{suffix}"
            Image.fromarray(img).save(path, **kw)
            out[kind].append(path)
    return out


# ------------------------------------------------------------------ measurement


def compare(a, b) -> dict:
    a, b = np.asarray(a), np.asarray(b)
    same_shape = a.shape == b.shape
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) if same_shape else None
    return {
        "identical": bool(same_shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()),
        "max_abs_diff": float(diff.max()) if same_shape else None,
        "frac_differing": float((diff > 0).mean()) if same_shape else None,
    }


def measure(name: str, old, new, n: int, repeats: int, verdict: str) -> dict:
    times = interleaved({"old": old, "opencv": new}, repeats)
    t_old, t_new = summary(times["old"], n), summary(times["opencv"], n)
    return {
        "op": name,
        "n": n,
        "old_s": t_old["median_s"],
        "opencv_s": t_new["median_s"],
        "ratio_old_over_opencv": t_old["median_s"] / t_new["median_s"],
        **compare(old(), new()),
        "verdict": verdict,
    }


def run(n_eyes: int = 512, n_hands: int = 128, n_files: int = 100, repeats: int = 5) -> dict:
    from simgan.data.importers import crop_resize, read_image
    from simgan.data.importers.folder import to_uint8
    from simgan.sim import eyes, hands

    load_before = load()
    ev = eye_inputs(n_eyes)
    z = hand_depth(n_hands)
    rows = []
    with threads(1):
        jin, q = ev["jpeg_in"], ev["quality"]
        rows.append(
            measure(
                "eyes JPEG round trip",
                lambda: pillow_jpeg(jin, q),
                lambda: eyes._jpeg(jin, q),
                len(jin),
                repeats,
                "adopted: identical",
            )
        )
        rows.append(
            measure(
                "eyes histogram equalization",
                lambda: eyes.equalize_histograms(jin),
                lambda: cv_equalize(jin),
                len(jin),
                repeats,
                "kept numpy: OpenCV rounds float32 ties otherwise",
            )
        )
        bin_, kern = ev["blur_in"], ev["kernels"]
        rows.append(
            measure(
                "eyes defocus+motion blur",
                lambda: torch_blur(bin_, kern),
                lambda: cv_blur(bin_, kern),
                len(bin_),
                repeats,
                "kept torch: not identical (ulps), no gain",
            )
        )
        rows.append(
            measure(
                "hands Kinect 3x3 min/max",
                lambda: scipy_min_max(z),
                lambda: hands._min_max_3x3(z),
                len(z),
                repeats,
                "adopted: identical",
            )
        )
    with tempfile.TemporaryDirectory(prefix="bench_opencv_") as tmp_name:
        files = write_files(Path(tmp_name), n_files)
        for kind, paths in files.items():
            rows.append(
                measure(
                    f"importer decode {kind} 240x320 -> grey",
                    lambda paths=paths: np.stack([pillow_decode_grey(p) for p in paths]),
                    lambda paths=paths: np.stack([to_uint8(read_image(p), False) for p in paths]),
                    len(paths),
                    repeats,
                    "adopted: identical pixels",
                )
            )
        grey = np.stack([pillow_decode_grey(p) for p in files["png"]])
        for out_hw, label in (((120, 160), "2x"), ((35, 55), "fractional")):
            box = (0, 0, grey.shape[2], grey.shape[1])
            rows.append(
                measure(
                    f"importer area resize 240x320 -> {out_hw[0]}x{out_hw[1]} ({label})",
                    lambda out_hw=out_hw: np.stack([pillow_resize(g, out_hw) for g in grey]),
                    lambda out_hw=out_hw, box=box: np.stack([crop_resize(g, box, out_hw) for g in grey]),
                    len(grey),
                    repeats,
                    "adopted: exact area mean (Pillow BOX is not)",
                )
            )
    report = {
        "machine": machine(),
        "load_before": load_before,
        "load_after": load(),
        "repeats": repeats,
        "threads": 1,
        "results": rows,
    }
    print(
        table(
            rows,
            [
                ("op", "op", "s"),
                ("n", "N", "d"),
                ("ratio_old_over_opencv", "old/OpenCV", ".2f"),
                ("identical", "identical", ""),
                ("max_abs_diff", "max|diff|", ".3g"),
                ("verdict", "verdict", "s"),
            ],
        )
    )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result("opencv", report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-eyes", type=int, default=512)
    p.add_argument("--n-hands", type=int, default=128)
    p.add_argument("--n-files", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    run(a.n_eyes, a.n_hands, a.n_files, a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
