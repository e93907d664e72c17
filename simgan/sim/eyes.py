"""UnityEyes-like eye renderer (synthetic domain) and a surrogate "real" eye domain.

Both domains draw geometry from the same process and compute labels with the same functions
(`eye_labels`); they differ in (a) the appearance process and (b) the gaze / head-pose
distribution. Images are 35 x 55 (H x W) grayscale uint8, rendered supersampled and area-averaged.

Conventions
-----------
* Camera looks along +z; image x to the right (column), y down (row). Pixel centres sit at integer
  coordinates: (0, 0) is the centre of the top-left pixel; labels use the same coordinates.
* gaze (N, 3) unit vectors in the MPIIGaze normalized camera frame: pitch = asin(-y),
  yaw = atan2(-x, -z); looking straight at the camera is (0, 0, -1).
* Projection is orthographic (a normalized eye crop is far from the camera compared with the
  eyeball), so the pupil centre in the image is eyeball_centre + d * (g_x, g_y), where
  d = sqrt(R^2 - r_iris^2). Hence yaw > 0 (g_x < 0) moves the pupil to the image LEFT (smaller
  column) and pitch > 0 (g_y < 0, looking up) moves it UP (smaller row).
* The iris and pupil are disks facing along g; their images are ellipses whose minor axis points
  along (g_x, g_y) with axis ratio cos(angle between g and the camera axis) = -g_z.
* The eye is a left eye as seen by the camera: the nasal corner with the caruncle is at image left.
* landmarks (N, 16, 2): the eyelid margin, starting at the image-left corner, along the upper lid to
  the right corner (9 points) then back along the lower lid (7 interior points).
* head_pose (N, 3): (pitch, yaw, roll) in degrees. Roll rotates the eye region in the image plane,
  yaw foreshortens it horizontally and shifts the eyeball behind the lids, pitch shifts it
  vertically. The eyelid opening follows the eye-in-head pitch (gaze pitch - head pitch): the upper
  lid lowers by 1.5 % of its height per degree of looking down and rises when looking up.

Distributions (degrees; "U(a, b)" uniform, "N(m, s)" Gaussian clipped to the synthetic range)
--------------------------------------------------------------------------------------------
                     synthetic         real
  gaze pitch         U(-25, 25)        N(-8, 7)
  gaze yaw           U(-30, 30)        N(5, 9)
  head pitch         U(-15, 15)        N(-4, 5)
  head yaw           U(-20, 20)        N(3, 7)
  head roll          U(-10, 10)        N(0, 3)
So the real distribution is narrower (std of pitch 7 vs 14.4, yaw 9 vs 17.3), centred on a
shifted mean, and always inside the synthetic range, as for MPIIGaze vs UnityEyes.

Appearance
----------
synthetic (clean render, as UnityEyes): skin albedo and lighting ramp, eye-socket shading, lid crease,
  dark lid margin, caruncle, sphere-shaded sclera, iris (grey level from iris colour) with radial
  texture and dark limbus, pupil size, directional light with Lambert shading.
real (surrogate of MPIIGaze, the process the clean renderer lacks): skin pores (two-scale noise),
  upper and lower eyelashes, corneal glints, lid shadow on the eyeball, defocus + motion blur,
  vignetting, gamma, Poisson-Gaussian sensor noise, JPEG compression (Pillow, quality 35-80) and
  per-image histogram equalization (MPIIGaze's normalized images are histogram equalized).
  Measured gap (tests/test_sim_eyes.py asserts the margins): on the same geometry, the mean
  |Laplacian| of real images is ~5x that of synthetic ones (49.5 vs 9.1 grey levels, 256 images;
  the test requires > 1.5x), and real images span the full 0..255 range (equalized; median range
  255) while clean renders do not (median 198; the test requires < 250).
  The gap matters for gaze estimation: `benchmarks/bench_simulators.py --only none --samples ''
  --domain-gap` trains one small gaze CNN on 8k clean synthetic eyes and one on 8k labelled real
  eyes (1500 Adam steps of 64) and tests both on 2k real eyes. Measured (mean angular error):
  trained on synthetic 16.5 deg, trained on real 5.3 deg, constant mean-gaze predictor 10.0 deg;
  i.e. clean synthetic training is worse than a constant on real eyes, as in the paper's setting.

API
---
render_eyes(n, seed, domain="synthetic", workers=None, chunk=1024, supersample=2, progress=False)
    -> {"images", "gaze", "pupil", "landmarks", "head_pose"}
simulate_eyes_to_file(path, n, seed, domain="synthetic", workers=None, chunk=1024, progress=True,
    supersample=2, chunk_rows=None, compression=None)   # streams through DatasetWriter
sample_eye_params(n, rng, domain) / eye_labels(params) / render_eye_batch(params, rng, domain, ss):
    the pieces, for tests and for rendering chosen poses.
Same (n, seed, domain, chunk, supersample) -> same bytes, whatever `workers`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import numpy as np

from simgan.io import SimganError
from simgan.parallel import DEFAULT_CHUNK, chunk_bounds, concat_chunks, map_chunks

GENERATOR_VERSION = "embedded-eyes 1"
SOURCE = "embedded-eyes"
HEIGHT, WIDTH = 35, 55
DOMAINS = ("synthetic", "real")
N_UPPER, N_LOWER = 9, 7
N_LANDMARKS = N_UPPER + N_LOWER
DEFAULT_SUPERSAMPLE = 2
# Images rendered together. Per-pixel temporaries of 8 images stay in the L2 cache; measured with
# full-frame rendering (before the eye window): 8 -> 1.9k img/s per core, 32 -> 1.2k, 64 -> 0.75k.
_SUB_BATCH = 8

# name -> ("uniform", low, high) or ("normal", mean, std, low, high): the numbers in the docstring.
POSE_DISTRIBUTIONS = {
    "synthetic": {
        "gaze_pitch": ("uniform", -25.0, 25.0),
        "gaze_yaw": ("uniform", -30.0, 30.0),
        "head_pitch": ("uniform", -15.0, 15.0),
        "head_yaw": ("uniform", -20.0, 20.0),
        "head_roll": ("uniform", -10.0, 10.0),
    },
    "real": {
        "gaze_pitch": ("normal", -8.0, 7.0, -25.0, 25.0),
        "gaze_yaw": ("normal", 5.0, 9.0, -30.0, 30.0),
        "head_pitch": ("normal", -4.0, 5.0, -15.0, 15.0),
        "head_yaw": ("normal", 3.0, 7.0, -20.0, 20.0),
        "head_roll": ("normal", 0.0, 3.0, -10.0, 10.0),
    },
}

# Geometry and appearance ranges shared by both domains: uniform (low, high) per image.
_SHARED_RANGES = {
    # geometry (pixels of the 35 x 55 output)
    "eye_cx": (25.5, 28.5),
    "eye_cy": (16.0, 18.5),
    "half_width": (12.5, 15.5),
    "eyeball_radius": (11.0, 13.0),
    "iris_radius": (5.6, 6.6),
    "pupil_fraction": (0.25, 0.5),  # pupil radius / iris radius
    "upper_lid": (6.0, 8.5),
    "lower_lid": (4.0, 6.0),
    "corner_tilt": (-1.5, 0.0),  # v offset at t = +1; the nasal (left) corner sits lower
    "eyeball_jitter_x": (-0.6, 0.6),
    "eyeball_jitter_y": (-0.6, 0.6),
    # appearance
    "skin": (0.25, 0.8),
    "sclera": (0.7, 0.95),
    "iris": (0.1, 0.55),  # grey level of the iris colour: dark brown .. light blue
    "pupil": (0.02, 0.08),
    "caruncle": (0.45, 0.7),
    "ambient": (0.35, 0.6),
    "light_angle": (0.0, 2 * np.pi),
    "light_elevation": (0.6, 1.2),  # radians from the image plane towards the camera
    "skin_ramp": (0.0, 0.35),
    "socket_shade": (0.05, 0.25),
    "margin_dark": (0.2, 0.5),
    "crease_offset": (2.5, 4.5),
    "crease_dark": (0.05, 0.2),
    "iris_texture": (0.05, 0.2),
    "iris_freq1": (5.0, 13.0),
    "iris_freq2": (11.0, 23.0),
    "iris_phase1": (0.0, 2 * np.pi),
    "iris_phase2": (0.0, 2 * np.pi),
    "limbus_dark": (0.2, 0.5),
}

# Appearance of the surrogate real domain only.
_REAL_RANGES = {
    "pore_amount": (0.01, 0.03),  # fine skin grain
    "skin_blotch": (0.04, 0.12),  # low-frequency skin unevenness
    "lash_dark": (0.3, 0.7),
    "lash_length": (2.0, 4.0),
    "lash_freq": (1.6, 2.6),  # strands per pixel along the lid, in radians per pixel / 2 pi
    "lash_slant": (-0.6, 0.6),
    "lash_phase": (0.0, 2 * np.pi),
    "glint": (0.5, 1.0),
    "glint_radius": (0.45, 0.9),
    "lid_shadow": (0.2, 0.5),
    "lid_shadow_width": (1.0, 2.5),
    "blur_sigma": (0.3, 0.9),
    "motion_length": (0.0, 1.5),
    "motion_angle": (0.0, np.pi),
    "vignette": (0.1, 0.4),
    "vignette_cx": (20.0, 35.0),
    "vignette_cy": (12.0, 23.0),
    "gamma": (0.75, 1.3),
    "photons": (400.0, 2000.0),  # expected photon count at white: Poisson (shot) noise level
    "read_noise": (0.003, 0.01),
    "jpeg_quality": (50.0, 90.0),
}


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise SimganError(f"eyes: parameter 'domain': expected one of {list(DOMAINS)}, got {domain!r}")
    return domain


def _check_supersample(supersample) -> int:
    if not isinstance(supersample, (int, np.integer)) or not 1 <= supersample <= 8:
        raise SimganError(f"eyes: parameter 'supersample': expected an integer in 1..8, got {supersample!r}")
    return int(supersample)


# ---------------------------------------------------------------------------------------------
# Gaze conventions


def gaze_vector(pitch_deg, yaw_deg) -> np.ndarray:
    """(pitch, yaw) in degrees -> unit vectors (N, 3), float32, MPIIGaze convention."""
    p, y = np.radians(np.asarray(pitch_deg, np.float64)), np.radians(np.asarray(yaw_deg, np.float64))
    g = np.stack([-np.cos(p) * np.sin(y), -np.sin(p), -np.cos(p) * np.cos(y)], axis=-1)
    return g.astype(np.float32)


def gaze_angles(gaze: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) -> (N, 2) (pitch, yaw) in degrees: pitch = asin(-y), yaw = atan2(-x, -z)."""
    g = np.asarray(gaze, np.float64)
    pitch = np.arcsin(np.clip(-g[..., 1], -1.0, 1.0))
    yaw = np.arctan2(-g[..., 0], -g[..., 2])
    return np.degrees(np.stack([pitch, yaw], axis=-1))


# ---------------------------------------------------------------------------------------------
# Parameters and labels (numpy, float64; the same functions serve both domains)


def _draw(rng: np.random.Generator, spec: tuple, n: int) -> np.ndarray:
    if spec[0] == "uniform":
        return rng.uniform(spec[1], spec[2], n)
    _, mean, std, low, high = spec
    return np.clip(rng.normal(mean, std, n), low, high)


def sample_eye_params(n: int, rng: np.random.Generator, domain: str = "synthetic") -> dict[str, np.ndarray]:
    """Per-image parameters, each an (n,) float64 array. Draw order is fixed (determinism)."""
    _check_domain(domain)
    params = {name: _draw(rng, spec, n) for name, spec in POSE_DISTRIBUTIONS[domain].items()}
    params.update({name: rng.uniform(lo, hi, n) for name, (lo, hi) in _SHARED_RANGES.items()})
    if domain == "real":
        params.update({name: rng.uniform(lo, hi, n) for name, (lo, hi) in _REAL_RANGES.items()})
    return params


def _geometry(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Derived geometry (image-space, float64) used by both the labels and the renderer."""
    g = gaze_vector(params["gaze_pitch"], params["gaze_yaw"]).astype(np.float64)
    head_pitch, head_yaw, roll = (np.radians(params[k]) for k in ("head_pitch", "head_yaw", "head_roll"))
    eyeball_r = params["eyeball_radius"]
    iris_r = params["iris_radius"]
    # The eyeball centre lies about half a radius behind the lid plane, so head rotation shifts it
    # relative to the lids (parallax) while the lids themselves foreshorten.
    depth = 0.5 * eyeball_r
    ex = params["eye_cx"] + params["eyeball_jitter_x"] - depth * np.sin(head_yaw)
    ey = params["eye_cy"] + params["eyeball_jitter_y"] + depth * np.sin(head_pitch)
    d = np.sqrt(eyeball_r**2 - iris_r**2)
    pupil_x, pupil_y = ex + d * g[:, 0], ey + d * g[:, 1]
    eye_in_head_pitch = params["gaze_pitch"] - params["head_pitch"]
    upper = params["upper_lid"] * np.clip(1.0 + 0.015 * eye_in_head_pitch, 0.3, 1.5)
    lower = params["lower_lid"] * np.clip(1.0 - 0.006 * eye_in_head_pitch, 0.7, 1.3)
    half_width = params["half_width"] * np.cos(head_yaw)
    # The upper lid's highest point follows the iris sideways (as real lids do).
    peak_shift = np.clip(0.5 * d * g[:, 0] / half_width, -0.4, 0.4)
    return {
        "gaze": g,
        "eyeball_x": ex,
        "eyeball_y": ey,
        "pupil_x": pupil_x,
        "pupil_y": pupil_y,
        "cos_theta": -g[:, 2],
        "upper": upper,
        "lower": lower,
        "half_width": half_width,
        "peak_shift": peak_shift,
        "cos_roll": np.cos(roll),
        "sin_roll": np.sin(roll),
    }


def _lid_profile(t, xp):
    """Lid opening profile over t = u / half_width: 1 at the centre, 0 at and beyond the corners."""
    return xp.clip(1.0 - t * t, 0.0, None)


def _upper_lid_v(t, geo_upper, peak_shift, tilt, xp):
    # Shifting t moves the peak but keeps the corners at t = +-1 fixed; f(2 - f) flattens the
    # top of the parabola the way an upper lid arches (and needs no pow, which is slow per pixel).
    f = _lid_profile(t - peak_shift * _lid_profile(t, xp), xp)
    return tilt * t - geo_upper * (f * (2.0 - f))


def _lower_lid_v(t, geo_lower, tilt, xp):
    return tilt * t + geo_lower * _lid_profile(t, xp)


def eye_labels(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Labels (gaze, pupil, landmarks, head_pose) of the images `render_eye_batch` draws from params."""
    geo = _geometry(params)
    n = len(params["gaze_pitch"])
    t_up = np.linspace(-1.0, 1.0, N_UPPER)
    t_low = np.linspace(1.0, -1.0, N_LOWER + 2)[1:-1]
    col = lambda a: a[:, None]
    tilt = col(params["corner_tilt"])
    v_up = _upper_lid_v(t_up[None], col(geo["upper"]), col(geo["peak_shift"]), tilt, np)
    v_low = _lower_lid_v(t_low[None], col(geo["lower"]), tilt, np)
    t = np.concatenate([np.broadcast_to(t_up, (n, N_UPPER)), np.broadcast_to(t_low, (n, N_LOWER))], axis=1)
    u = t * col(geo["half_width"])
    v = np.concatenate([v_up, v_low], axis=1)
    c, s = col(geo["cos_roll"]), col(geo["sin_roll"])
    lx = col(params["eye_cx"]) + u * c - v * s
    ly = col(params["eye_cy"]) + u * s + v * c
    g = geo["gaze"]
    return {
        "gaze": (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32),
        "pupil": np.stack([geo["pupil_x"], geo["pupil_y"]], axis=1).astype(np.float32),
        "landmarks": np.stack([lx, ly], axis=2).astype(np.float32),
        "head_pose": np.stack([params["head_pitch"], params["head_yaw"], params["head_roll"]], axis=1).astype(
            np.float32
        ),
    }


# ---------------------------------------------------------------------------------------------
# Rendering (torch float32, a whole sub-batch at once over (B, H*ss, W*ss))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Render single-threaded: parallelism comes from worker processes, and a workers=1 run must
    measure one core. Restores the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _coverage(signed_distance, ss: int):
    """Fraction of a sub-pixel inside a shape, from its signed distance in output pixels (> 0 inside)."""
    return (signed_distance * ss + 0.5).clamp_(0.0, 1.0)


def _bump(q):
    """Smooth compact bump (1 - q)^2 for q = squared normalized distance < 1, else 0.

    Used instead of exp(-q): no transcendental per pixel and no denormals far from the centre,
    both of which made exp the most expensive operation of the renderer."""
    return (1.0 - q).clamp_(min=0.0).square_()


def _ellipse_sd(a, b, radius_a, radius_b):
    """First-order signed distance to the ellipse (a/ra)^2 + (b/rb)^2 = 1, positive inside."""
    qa, qb = a / radius_a, b / radius_b
    f = qa * qa + qb * qb - 1.0
    grad = 2.0 * ((qa / radius_a) ** 2 + (qb / radius_b) ** 2).sqrt_() + 1e-6
    return -f / grad


# Iris, pupil and glint are drawn in a window around the pupil (they cover ~10 % of the image),
# then pasted. Half-size in output pixels, > max iris radius + 1.
_IRIS_WINDOW_HALF = 8
# Margin (output pixels) around the eyelid landmarks that the supersampled eye window must cover:
# the lid curve between landmarks, the dark lid margin and antialiasing stay inside it.
_EYE_WINDOW_MARGIN = 2.5


def _iris_window(p: dict, geo: dict, domain: str, ss: int, win_x0, win_y0, win_h: int, win_w: int):
    """Iris/pupil (and real-domain glint) in a per-image square around the pupil, placed inside the
    eye window (origin win_x0, win_y0 in output pixels; size win_h x win_w supersampled pixels).

    Returns (offset_x, offset_y, delta, glint): offsets in supersampled pixels within the eye
    window; `delta` is what the iris and pupil add to the flat sclera albedo, `glint` the glint's
    blend weight (None for synthetic). Clamping the square inside the eye window loses nothing:
    whatever it no longer covers lies outside the eye window, hence outside the lid aperture."""
    import torch

    size = 2 * _IRIS_WINDOW_HALF * ss
    ar = torch.arange(size, dtype=torch.float32)
    ox = (torch.round((geo["pupil_x"] - _IRIS_WINDOW_HALF - win_x0) * ss)).clamp_(0, win_w - size)
    oy = (torch.round((geo["pupil_y"] - _IRIS_WINDOW_HALF - win_y0) * ss)).clamp_(0, win_h - size)
    X = win_x0 + (ox + ar.view(1, 1, size) + 0.5) / ss - 0.5
    Y = win_y0 + (oy + ar.view(1, size, 1) + 0.5) / ss - 0.5
    gx, gy = geo["gaze_x"], geo["gaze_y"]
    g_len = (gx * gx + gy * gy).sqrt()
    # Minor axis of the projected disks points along (gx, gy); any axis works when looking straight.
    ax_x = torch.where(g_len > 1e-6, gx / g_len.clamp(min=1e-6), torch.ones_like(gx))
    ax_y = torch.where(g_len > 1e-6, gy / g_len.clamp(min=1e-6), torch.zeros_like(gy))
    qx, qy = X - geo["pupil_x"], Y - geo["pupil_y"]
    a = qx * ax_x + qy * ax_y
    b = qy * ax_x - qx * ax_y
    cos_t = geo["cos_theta"]
    iris_r = p["iris_radius"]
    iris_cov = _coverage(_ellipse_sd(a, b, iris_r * cos_t, iris_r), ss)
    pupil_r = iris_r * p["pupil_fraction"]
    pupil_cov = _coverage(_ellipse_sd(a, b, pupil_r * cos_t, pupil_r), ss)
    # Texture lives in the iris plane: radial strands (angle) and a dark limbus ring (radius).
    a_plane = a / cos_t
    rho = (a_plane * a_plane + b * b).sqrt_() / iris_r
    phi = torch.atan2(b, a_plane)
    strands = torch.sin(p["iris_freq1"] * phi + p["iris_phase1"]) * torch.sin(p["iris_freq2"] * phi + p["iris_phase2"])
    limbus = 1.0 - p["limbus_dark"] * (rho.clamp_(0.6, 1.0) - 0.6) * 2.5
    iris = p["iris"] * (1.0 + p["iris_texture"] * strands) * limbus
    eye = p["sclera"] + (iris - p["sclera"]) * iris_cov
    eye = eye + (p["pupil"] - eye) * pupil_cov
    delta = eye - p["sclera"]
    glint = None
    if domain == "real":
        # The cornea mirrors the light source: a small spot offset from the pupil towards it.
        cos_el = torch.cos(p["light_elevation"])
        gl_x = geo["pupil_x"] + 0.45 * iris_r * cos_el * torch.cos(p["light_angle"])
        gl_y = geo["pupil_y"] + 0.45 * iris_r * cos_el * torch.sin(p["light_angle"])
        glint = _bump(((X - gl_x) ** 2 + (Y - gl_y) ** 2) / (2.0 * p["glint_radius"]) ** 2)
    return ox.long(), oy.long(), delta, glint


def _paste(window, ox, oy, height: int, width: int, fill: float = 0.0):
    """Place per-image (B, h, w) windows at integer offsets (B, 1, 1) into a (B, height, width) frame."""
    import torch

    b, h, w = window.shape
    index = (oy + torch.arange(h).view(1, h, 1)) * width + ox + torch.arange(w).view(1, 1, w)
    full = torch.full((b, height * width), fill)
    full.scatter_(1, index.view(b, -1), window.reshape(b, -1))
    return full.view(b, height, width)


def _lid_frame(X, Y, p: dict, geo: dict, torch) -> dict:
    """Eye-local coordinates and lid curves at pixel positions X (.., 1, W), Y (.., H, 1).

    u runs along the (rolled) lid axis, v perpendicular and pointing down; t = u / half width."""
    dx, dy = X - p["eye_cx"], Y - p["eye_cy"]
    u = dx * geo["cos_roll"] + dy * geo["sin_roll"]
    v = dy * geo["cos_roll"] - dx * geo["sin_roll"]
    t = u / geo["half_width"]
    return {
        "dx": dx,
        "dy": dy,
        "u": u,
        "v": v,
        "t": t,
        "profile": _lid_profile(t, torch),
        "v_up": _upper_lid_v(t, geo["upper"], geo["peak_shift"], p["corner_tilt"], torch),
        "v_low": _lower_lid_v(t, geo["lower"], p["corner_tilt"], torch),
    }


def _light(p: dict):
    """Unit light direction (lx, ly, lz): lz > 0 points from the face towards the camera."""
    import torch

    cos_el = torch.cos(p["light_elevation"])
    return cos_el * torch.cos(p["light_angle"]), cos_el * torch.sin(p["light_angle"]), torch.sin(p["light_elevation"])


def _skin(p: dict, geo: dict, rng: np.random.Generator, domain: str):
    """Skin at output resolution (it is smooth at the pixel scale): (B, H, W).

    Albedo with a lighting ramp, darker in the eye socket, a lid crease; real: pores and blotches."""
    import torch
    import torch.nn.functional as F

    X = torch.arange(WIDTH, dtype=torch.float32).view(1, 1, WIDTH)
    Y = torch.arange(HEIGHT, dtype=torch.float32).view(1, HEIGHT, 1)
    f = _lid_frame(X, Y, p, geo, torch)
    lx, ly, _ = _light(p)
    skin = p["skin"] * (1.0 + p["skin_ramp"] * (f["dx"] * lx + f["dy"] * ly) / (WIDTH / 2))
    socket = _bump((f["u"] / (geo["half_width"] + 6.0)) ** 2 + (f["v"] / (geo["upper"] + 7.0)) ** 2)
    skin *= 1.0 - p["socket_shade"] * socket
    crease = _bump(((f["v"] - f["v_up"] + p["crease_offset"]) / 1.4) ** 2) * f["profile"]
    skin *= 1.0 - p["crease_dark"] * crease
    if domain == "real":
        b = skin.shape[0]
        fine = torch.from_numpy(rng.standard_normal((b, HEIGHT, WIDTH), dtype=np.float32))
        coarse = torch.from_numpy(rng.standard_normal((b, 1, 5, 8), dtype=np.float32))
        blotch = F.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bicubic", align_corners=False)[:, 0]
        skin *= 1.0 + p["pore_amount"] * fine + p["skin_blotch"] * blotch
    return skin


def _eye_window_bounds(landmarks: np.ndarray, lash: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per-image origin (x0, y0) and a common size (h, w), in output pixels, of a window holding the
    lid aperture, lid margins and lashes (length `lash` above, half below)."""
    lo = landmarks.min(axis=1) - _EYE_WINDOW_MARGIN
    hi = landmarks.max(axis=1) + _EYE_WINDOW_MARGIN
    lo[:, 1] -= lash
    hi[:, 1] += 0.5 * lash
    min_side = 2 * _IRIS_WINDOW_HALF  # the iris square must fit inside
    w = int(np.clip(np.ceil((hi[:, 0] - lo[:, 0]).max()) + 1, min_side, WIDTH))
    h = int(np.clip(np.ceil((hi[:, 1] - lo[:, 1]).max()) + 1, min_side, HEIGHT))
    x0 = np.clip(np.floor(lo[:, 0]), 0, WIDTH - w)
    y0 = np.clip(np.floor(lo[:, 1]), 0, HEIGHT - h)
    return x0, y0, h, w


def _scene(p: dict, geo: dict, rng: np.random.Generator, domain: str, ss: int, window: tuple):
    """Render one sub-batch; returns (B, H, W) float32 in ~[0, 1] at output resolution.

    Skin is drawn at output resolution; everything with sharp edges or fine detail (lid aperture,
    eyeball, iris, lid margin, lashes) is drawn supersampled in the eye window and area-averaged.
    The composite per output pixel is skin * mean((1 - aperture) * M) + mean(aperture * eye * M),
    M being the lid-margin and lash darkening; exact where skin is constant within a pixel."""
    import torch
    import torch.nn.functional as F

    x0, y0, win_h, win_w = window
    x0, y0 = (
        torch.from_numpy(x0.astype(np.float32)).view(-1, 1, 1),
        torch.from_numpy(y0.astype(np.float32)).view(-1, 1, 1),
    )
    hs, ws = win_h * ss, win_w * ss
    X = x0 + ((torch.arange(ws, dtype=torch.float32) + 0.5) / ss - 0.5).view(1, 1, ws)
    Y = y0 + ((torch.arange(hs, dtype=torch.float32) + 0.5) / ss - 0.5).view(1, hs, 1)
    f = _lid_frame(X, Y, p, geo, torch)
    v, t, v_up, profile = f["v"], f["t"], f["v_up"], f["profile"]
    # The corner term closes the aperture beyond the corners, where both lids meet at zero width.
    corner = (1.0 - t.abs()) * geo["half_width"]
    aperture = _coverage(torch.minimum(torch.minimum(v - v_up, f["v_low"] - v), corner), ss)

    # Eyeball: sphere-shaded sclera (Lambert + ambient) plus the iris square; caruncle at the nasal corner.
    lx, ly, lz = _light(p)
    ambient, radius = p["ambient"], p["eyeball_radius"]
    nx, ny = (X - geo["eyeball_x"]) / radius, (Y - geo["eyeball_y"]) / radius
    nz = (1.0 - nx * nx - ny * ny).clamp_(min=0.0).sqrt_()
    shade = ambient + (1.0 - ambient) * (nx * lx + ny * ly + nz * lz).clamp_(min=0.0)
    ox, oy, delta, glint = _iris_window(p, geo, domain, ss, x0, y0, hs, ws)
    eye = (p["sclera"] + _paste(delta, ox, oy, hs, ws)) * shade
    car = _bump(((t + 0.9) / 0.2) ** 2 + ((v + 0.9 * p["corner_tilt"]) / 2.2) ** 2)
    eye += (p["caruncle"] * shade - eye) * car
    if domain == "real":
        eye += (p["glint"] - eye) * _paste(glint, ox, oy, hs, ws)
        # The upper lid and lashes shadow the top of the visible eyeball.
        below_lid = (v - v_up).clamp_(min=0.0) / (2.0 * p["lid_shadow_width"])
        eye *= 1.0 - p["lid_shadow"] * _bump(below_lid)

    darken = 1.0 - p["margin_dark"] * _bump((v - v_up) ** 2) * profile
    if domain == "real":
        # Lashes: slanted dark strands rooted on the lid margins, longer at the lid's middle.
        above = (v_up - v).clamp_(min=0.0)
        length = (p["lash_length"] * profile).clamp_(min=1e-3)
        phase = 2 * np.pi * p["lash_freq"] * (f["u"] + p["lash_slant"] * above) + p["lash_phase"]
        strands = (torch.cos(phase) * 3.0 - 2.0).clamp_(min=0.0)
        upper_band = (1.0 - above / length).clamp_(0.0, 1.0) * (above > 0)
        below = (v - f["v_low"]).clamp_(min=0.0)
        lower_band = (1.0 - below / (0.5 * length)).clamp_(0.0, 1.0) * (below > 0)
        darken *= 1.0 - p["lash_dark"] * strands * (upper_band + 0.6 * lower_band).clamp_(max=1.0)

    def area_average(x):
        return F.avg_pool2d(x.unsqueeze(1), ss)[:, 0] if ss > 1 else x

    skin_weight = area_average((1.0 - aperture) * darken)
    eye_part = area_average(aperture * eye * darken)
    ox0, oy0 = x0.long(), y0.long()
    skin = _skin(p, geo, rng, domain)
    return skin * _paste(skin_weight, ox0, oy0, HEIGHT, WIDTH, fill=1.0) + _paste(eye_part, ox0, oy0, HEIGHT, WIDTH)


def _blur_kernels(p: dict, size: int = 7):
    """Per-image defocus (Gaussian) convolved with motion (a line): (B, 1, size, size), sums to 1."""
    import torch

    r = torch.arange(size, dtype=torch.float32) - size // 2
    kx, ky = r.view(1, 1, 1, size), r.view(1, 1, size, 1)
    steps = torch.linspace(-0.5, 0.5, 5).view(1, 5, 1, 1)
    length, angle = p["motion_length"].view(-1, 1, 1, 1), p["motion_angle"].view(-1, 1, 1, 1)
    sigma = p["blur_sigma"].view(-1, 1, 1, 1)
    cx, cy = steps * length * torch.cos(angle), steps * length * torch.sin(angle)
    k = torch.exp(-((kx - cx) ** 2 + (ky - cy) ** 2) / (2 * sigma**2)).sum(1, keepdim=True)
    return k / k.sum(dim=(2, 3), keepdim=True)


def _camera(img, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Real-domain camera on (B, H, W) float images in [0, 1]: blur, vignetting, gamma, noise -> uint8."""
    import torch
    import torch.nn.functional as F

    b = img.shape[0]
    k = _blur_kernels(p)
    pad = k.shape[-1] // 2
    x = F.pad(img.unsqueeze(0), (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, k, groups=b)[0]
    X = torch.arange(WIDTH, dtype=torch.float32).view(1, 1, WIDTH)
    Y = torch.arange(HEIGHT, dtype=torch.float32).view(1, HEIGHT, 1)
    r2 = ((X - p["vignette_cx"]) / (WIDTH / 2)) ** 2 + ((Y - p["vignette_cy"]) / (WIDTH / 2)) ** 2
    x = x * (1.0 - p["vignette"] * r2)
    x = x.clamp_(0.0, 1.0) ** p["gamma"]
    photons = p["photons"].numpy().astype(np.float64).reshape(-1, 1, 1)
    signal = rng.poisson(x.numpy().astype(np.float64) * photons) / photons
    signal = signal + rng.normal(0.0, 1.0, signal.shape) * p["read_noise"].numpy().reshape(-1, 1, 1)
    return np.clip(np.round(signal * 255.0), 0, 255).astype(np.uint8)


def _jpeg(images: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """JPEG round trip of each uint8 (H, W) image at its quality. OpenCV and Pillow both drive
    libjpeg-turbo with the IJG tables: the encoded bytes and decoded pixels are identical to the
    Pillow path this replaced, measured 7x faster on the simulator's own images (docs/performance.md)."""
    from simgan.opencv import cv2

    out = np.empty_like(images)
    for i, (im, q) in enumerate(zip(images, quality)):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(im), [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise SimganError(f"eyes: JPEG encoding of a {im.shape} {im.dtype} image at quality {int(q)} failed")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def equalize_histograms(images: np.ndarray) -> np.ndarray:
    """Per-image histogram equalization of uint8 (N, H, W), the OpenCV equalizeHist mapping.

    Kept in numpy rather than cv2.equalizeHist (4x faster on 35x55 eyes): OpenCV scales in float32
    and rounds exact ties otherwise (7 * 255 / 14 = 127.5 gives 127 there, 128 here; 148 of the
    possible denominators of a 35x55 image have such a tie), and a constant image maps to its
    value there, to 0 here, so the embedded data would not stay byte-identical. The k-NN
    baseline's features equalize every image so too (simgan.metrics.equalized_pixel_features)."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected (N, H, W) uint8, got {images.shape} {images.dtype}")
    n = images.shape[0]
    flat = images.reshape(n, -1)
    offsets = (np.arange(n) * 256)[:, None]
    hist = np.bincount((flat.astype(np.int64) + offsets).ravel(), minlength=n * 256).reshape(n, 256)
    cdf = hist.cumsum(axis=1)
    cdf_min = cdf[np.arange(n), (hist > 0).argmax(axis=1)][:, None]
    denom = np.maximum(flat.shape[1] - cdf_min, 1)
    lut = np.clip(np.round((cdf - cdf_min) * 255.0 / denom), 0, 255).astype(np.uint8)
    return np.take_along_axis(lut, flat.astype(np.int64), axis=1).reshape(images.shape)


def render_eye_batch(
    params: dict[str, np.ndarray],
    rng: np.random.Generator,
    domain: str = "synthetic",
    supersample: int = DEFAULT_SUPERSAMPLE,
) -> np.ndarray:
    """Render images (N, 35, 55) uint8 for the given parameters (see sample_eye_params).

    `rng` drives only the per-pixel randomness of the real domain (pores, sensor noise)."""
    import torch

    _check_domain(domain)
    ss = _check_supersample(supersample)
    missing = [k for k in (*_SHARED_RANGES, *POSE_DISTRIBUTIONS["synthetic"]) if k not in params]
    missing += [k for k in _REAL_RANGES if domain == "real" and k not in params]
    if missing:
        raise SimganError(f"eyes: parameter 'params': missing {missing}; build it with sample_eye_params")
    geo = _geometry(params)
    geo["gaze_x"], geo["gaze_y"] = geo["gaze"][:, 0], geo["gaze"][:, 1]
    n = len(params["gaze_pitch"])
    landmarks = eye_labels(params)["landmarks"].astype(np.float64)
    lash = params["lash_length"] if domain == "real" else np.zeros(n)
    out = np.empty((n, HEIGHT, WIDTH), np.uint8)
    with torch.no_grad(), _torch_threads(1):
        for s, e in chunk_bounds(n, _SUB_BATCH):
            as_t = lambda d: {
                k: torch.from_numpy(np.ascontiguousarray(v[s:e], np.float32)).view(-1, 1, 1)
                for k, v in d.items()
                if np.ndim(v) == 1
            }
            p, g = as_t(params), as_t(geo)
            window = _eye_window_bounds(landmarks[s:e], lash[s:e])
            img = _scene(p, g, rng, domain, ss, window)
            if domain == "synthetic":
                out[s:e] = torch.round(img.clamp(0.0, 1.0) * 255.0).to(torch.uint8).numpy()
            else:
                u8 = _camera(img, p, rng)
                u8 = _jpeg(u8, params["jpeg_quality"][s:e])
                out[s:e] = equalize_histograms(u8)
    return out


# ---------------------------------------------------------------------------------------------
# Public entry points


def _render_chunk(start: int, stop: int, rng: np.random.Generator, domain: str, supersample: int) -> dict:
    params = sample_eye_params(stop - start, rng, domain)
    arrays = eye_labels(params)
    arrays["images"] = render_eye_batch(params, rng, domain, supersample)
    return arrays


def _check_counts(n, seed, workers, chunk) -> None:
    for name, value, low in (("n", n, 1), ("chunk", chunk, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise SimganError(f"eyes: parameter '{name}': expected an integer >= {low}, got {value!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise SimganError(f"eyes: parameter 'workers': expected an integer >= 1 or None, got {workers!r}")


def _chunks(n, seed, domain, workers, chunk, supersample, progress: bool):
    """Rendered chunks in order (dicts of arrays), with a progress bar over images if asked."""
    from tqdm import tqdm

    _check_domain(domain)
    _check_counts(n, seed, workers, chunk)
    fn = functools.partial(_render_chunk, domain=domain, supersample=_check_supersample(supersample))
    # Import torch here, before map_chunks forks: workers inherit it instead of each paying the
    # import (seconds on a busy machine).
    import torch  # noqa: F401

    with tqdm(total=n, disable=not progress, unit="img", desc=f"eyes ({domain})", dynamic_ncols=True) as bar:
        for _, arrays in map_chunks(fn, n, seed, workers=workers, chunk=chunk):
            yield arrays
            bar.update(len(arrays["images"]))


def render_eyes(
    n: int,
    seed: int,
    domain: str = "synthetic",
    workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    supersample: int = DEFAULT_SUPERSAMPLE,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Render n eyes in memory: keys images, gaze, pupil, landmarks, head_pose.

    The result depends only on (n, seed, domain, chunk, supersample), never on `workers`."""
    return concat_chunks(list(_chunks(n, seed, domain, workers, chunk, supersample, progress)))


def simulate_eyes_to_file(
    path: str | os.PathLike,
    n: int,
    seed: int,
    domain: str = "synthetic",
    workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
    supersample: int = DEFAULT_SUPERSAMPLE,
    chunk_rows: int | None = None,
    compression: str | None = None,
) -> None:
    """Stream n rendered eyes into a gaze data set file (atomic; same bytes for any `workers`)."""
    from simgan.data.format import DatasetWriter

    attrs = {
        "task": "gaze",
        "domain": domain,
        "source": SOURCE,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "supersample": int(supersample),
        "chunk": int(chunk),
    }
    _check_domain(domain)
    with DatasetWriter(path, attrs, chunk_rows=chunk_rows, compression=compression) as writer:
        for arrays in _chunks(n, seed, domain, workers, chunk, supersample, progress):
            writer.append(arrays)
