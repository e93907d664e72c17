"""Embedded depth-hand simulator (NYU-like) and its surrogate "real" Kinect-like domain.

A kinematic right hand (an ellipsoid palm, five fingers of three flexing joints each, the thumb
included) is posed at random, placed in front of a pinhole camera and ray-cast as sphere-swept
capsules into a z-buffered depth map. The stored S x S image is a crop of that camera around the
hand, NYU/DeepPrior style: a cube of 2 * HALF_CUBE_MM centred on the centroid of the 14 evaluated
joints, projected at the centroid's depth. The crop is cast directly (the crop is itself a pinhole
camera with an off-centre principal point), so there is no resampling and labels are exact: a
joint's (u, v) is the projection of its 3-D position through the same camera the pixels use.

Conventions (the project's hand schema)
- pixel (row i, column j) has its centre at u = j, v = i;
- depth is normalized to the hand: d_norm = (z - z_centre) / HALF_CUBE_MM clipped to [-1, 1],
  z_centre = median depth of the clean hand's pixels (as the NYU importer centres on the median of
  the synthdepth-masked pixels); background and sensor holes are 1.0 (far);
- joints (N, 14, 3) float32: u, v in pixels of the stored image, d normalized like the depth.

Joint order (JOINT_NAMES) follows NYU's 14 evaluated joints, indices
[0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32] of its 36 (F1 = pinky ... F5 = thumb):
  0 pinky_tip   (NYU 0,  F1_KNU3_A)  fingertip: end of the distal capsule
  1 pinky_mid   (NYU 3,  F1_KNU2_B)  PIP joint (between proximal and middle phalanx)
  2 ring_tip, 3 ring_mid, 4 middle_tip, 5 middle_mid, 6 index_tip, 7 index_mid  (same pattern)
  8 thumb_tip   (NYU 24, F5_KNU3_A)  thumb tip
  9 thumb_mid   (NYU 25, F5_KNU3_B)  thumb IP joint
 10 thumb_base  (NYU 27, F5_KNU2_B)  thumb MCP joint
 11 palm_left   (NYU 30, PALM_1)     wrist, pinky side
 12 palm_right  (NYU 31, PALM_2)     wrist, thumb side
 13 palm_centre (NYU 32, PALM_3)     centre of the palm
Joint 3-D positions are skeleton points inside the flesh (as NYU's are): a fingertip joint is the
centre of the tip sphere, so the rendered surface at its pixel lies about one radius in front.

Both domains render the hand with part of its forearm, as a depth camera sees it. (Generator
hands-1 drew the forearm only in the real domain; a synthetic-trained estimator then put joints on
the real forearm, and no label-preserving refiner can add an arm: docs/experiments.md.)
The surrogate REAL domain uses the same renderer on a slightly different pose distribution
(natural, correlated finger curls instead of independent uniform flexion; hands 50 mm farther on
average) and passes the depth through `kinect_sensor` (depth-dependent noise, disparity
quantization, projector shadows, flying pixels, dropout blobs). The clean rendering of the same
pose without forearm is stored as `mask` (1 on hand pixels), as NYU ships a synthetic rendering
(synthdepth) with every real frame. Sensor constants are exaggerated relative
to a raw Kinect so that the effects survive the ~5x downsampling to 64 px; they are named below.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, replace

import numpy as np

from simgan.io import SimganError
from simgan.parallel import concat_chunks, map_chunks

GENERATOR_VERSION = "hands-2"  # hands-2: the synthetic domain renders the forearm too

JOINT_NAMES = (
    "pinky_tip",
    "pinky_mid",
    "ring_tip",
    "ring_mid",
    "middle_tip",
    "middle_mid",
    "index_tip",
    "index_mid",
    "thumb_tip",
    "thumb_mid",
    "thumb_base",
    "palm_left",
    "palm_right",
    "palm_centre",
)
HAND_SKELETON = [
    (0, 1),
    (2, 3),
    (4, 5),
    (6, 7),
    (8, 9),
    (9, 10),
    (1, 13),
    (3, 13),
    (5, 13),
    (7, 13),
    (10, 12),
    (11, 12),
    (11, 13),
    (12, 13),
]
NYU_JOINT_INDICES = (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32)

DOMAINS = ("synthetic", "real")
MIN_SIZE = 16

# Crop cube half-side and depth normalization range (DeepPrior's 300 mm cube for NYU).
HALF_CUBE_MM = 150.0
# Sensor of the uncropped camera (NYU intrinsics); used for where a hand may sit in the frame and
# for disparity, which the Kinect measures in sensor pixels.
SENSOR_F_PX = 588.0
SENSOR_W, SENSOR_H = 640, 480

# ---- hand model (hand frame, mm): x towards the thumb, y towards the fingers, z out of the palm.
# Finger order: pinky, ring, middle, index, thumb (NYU's F1..F5).
_FINGER_BASE = np.array(
    [
        [-26.0, 80.0, 0.0],  # pinky MCP
        [-9.0, 87.0, 0.0],  # ring MCP
        [8.0, 90.0, 0.0],  # middle MCP
        [25.0, 86.0, 0.0],  # index MCP
        [22.0, 16.0, 4.0],  # thumb CMC (inside the thenar part of the palm)
    ],
    dtype=np.float64,
)
_SEGMENT_LENGTH = np.array(
    [
        [32.0, 18.0, 18.0],
        [41.0, 26.0, 20.0],
        [44.0, 27.0, 20.0],
        [40.0, 23.0, 19.0],
        [44.0, 31.0, 26.0],  # thumb metacarpal, proximal, distal
    ],
    dtype=np.float64,
)
# Radius of each segment's capsule; the sphere at a joint takes the larger adjacent radius so the
# union of capsules is what the spheres + cylinders below draw.
_SEGMENT_RADIUS = np.array(
    [
        [8.0, 7.0, 6.0],
        [9.0, 8.0, 7.0],
        [9.5, 8.5, 7.5],
        [9.0, 8.0, 7.0],
        [12.0, 10.0, 9.0],
    ],
    dtype=np.float64,
)
_JOINT_RADIUS = np.concatenate([_SEGMENT_RADIUS[:, :1], _SEGMENT_RADIUS], axis=1)  # (5, 4)
# Rest abduction of each finger in the palm plane (deg, + towards the thumb) and its share of spread.
_REST_SPREAD_DEG = np.array([-10.0, -4.0, 0.0, 5.0])
_SPREAD_GAIN_DEG = np.array([-14.0, -6.0, 0.0, 9.0])
_PALM_CENTRE = np.array([0.0, 46.0, 0.0])
_PALM_SEMI_AXES = np.array([40.0, 50.0, 13.0])
_WRIST_POINTS = np.array([[-22.0, 6.0, 0.0], [22.0, 6.0, 0.0]])  # palm_left, palm_right
_FOREARM_START = np.array([0.0, 2.0, 0.0])
_FOREARM_LENGTH = 260.0
_FOREARM_RADIUS = 27.0

# Camera placement of the hand (mm) and hand scale.
_DISTANCE_MM = {"synthetic": (500.0, 900.0), "real": (550.0, 950.0)}
_SCALE_RANGE = (0.85, 1.1)

# ---- Kinect-like sensor (see kinect_sensor).
KINECT_BASELINE_MM = 75.0
# Per-pixel noise sigma = KINECT_NOISE_MM * (z / 1 m)^2, plus a smooth field of
# KINECT_SMOOTH_NOISE_MM * (z / 1 m)^2 (block matching makes the error spatially correlated).
KINECT_NOISE_MM = 7.0
KINECT_SMOOTH_NOISE_MM = 5.0
# Disparity step in sensor pixels. The raw Kinect resolves 1/8 px (about 1 mm at 0.6 m), invisible
# at 64 px; 1/2 px gives the terraced surfaces of downsampled structured-light depth.
KINECT_DISPARITY_STEP_PX = 0.5
# A depth step this large (mm) inside a 3x3 window is an edge: candidates for flying pixels.
KINECT_EDGE_MM = 20.0
KINECT_FLYING_PROB = 0.5
KINECT_FLYING_PROB_NEAR = 0.1
# The correlation window fails this many extra pixels (uniform range) beyond the geometric shadow.
KINECT_SHADOW_SLACK_PX = (0.2, 0.7)
KINECT_SHADOW_REACH_PX = 8
KINECT_BLOBS_PER_IMAGE = 1.2
KINECT_BLOB_RADIUS_PX = (1.0, 3.0)
KINECT_WALL_MM = (1300.0, 2500.0)

_SUB_BATCH = 32  # images ray-cast together: arrays of 32 x 64 x 64 float32 stay in L2 cache


@dataclass(frozen=True)
class HandPoses:
    """A batch of hand poses. Angles in radians, lengths in mm, camera frame X right, Y down, Z ahead.

    flexion: (B, 5, 3) per finger (pinky..thumb) the three joint flexions (MCP, PIP, DIP;
      thumb CMC, MCP, IP); spread: (B, 4) abduction of pinky..index; thumb_abduction: (B,);
      thumb_opposition: (B,); rotation: (B, 3, 3) hand frame -> camera; translation: (B, 3)
      camera-frame position of the hand-frame origin (the wrist); scale: (B,);
      forearm_dir: (B, 3) unit direction of the forearm in the camera frame."""

    flexion: np.ndarray
    spread: np.ndarray
    thumb_abduction: np.ndarray
    thumb_opposition: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    forearm_dir: np.ndarray

    def __len__(self) -> int:
        return len(self.scale)


# ------------------------------------------------------------------------------------ poses
def _axis_rotation(angle, axis: int) -> np.ndarray:
    """(..., 3, 3) right-handed rotations by `angle` (radians) about camera axis 0 (X), 1 or 2."""
    angle = np.asarray(angle, dtype=np.float64)
    i, j = {0: (1, 2), 1: (2, 0), 2: (0, 1)}[axis]
    m = np.zeros(angle.shape + (3, 3))
    m[..., axis, axis] = 1.0
    m[..., i, i] = m[..., j, j] = np.cos(angle)
    m[..., i, j] = -np.sin(angle)
    m[..., j, i] = np.sin(angle)
    return m


# Hand frame -> camera for the rest pose: fingers up in the image (-Y), palm facing the camera (-Z).
_REST_ROTATION = np.diag([1.0, -1.0, -1.0])


def sample_poses(n: int, rng: np.random.Generator, domain: str = "synthetic") -> HandPoses:
    """Draw n random poses. Synthetic: independent uniform flexion of every joint within its
    anatomical range. Real: natural hands, where one grip level drives all fingers (with per-finger
    jitter) and the DIP follows the PIP (about 2/3 of it), as human hands do."""
    _check_domain(domain)
    deg = np.pi / 180.0
    if domain == "synthetic":
        mcp = rng.uniform(-15, 90, (n, 4))
        pip = rng.uniform(0, 105, (n, 4))
        dip = rng.uniform(0, 75, (n, 4))
        spread = rng.uniform(0, 1, (n, 1)) + rng.normal(0, 0.15, (n, 4))
        thumb = np.stack([rng.uniform(-10, 40, n), rng.uniform(0, 60, n), rng.uniform(-10, 80, n)], -1)
    else:
        grip = rng.beta(0.9, 0.9, (n, 1))
        curl = np.clip(grip + rng.normal(0, 0.18, (n, 4)), 0, 1)
        mcp = -10 + 95 * curl + rng.normal(0, 6, (n, 4))
        pip = 105 * curl + rng.normal(0, 8, (n, 4))
        dip = np.clip(0.67 * pip + rng.normal(0, 6, (n, 4)), 0, 75)
        pip = np.clip(pip, 0, 105)
        spread = (1 - grip) * rng.uniform(0.3, 1.0, (n, 1)) + rng.normal(0, 0.08, (n, 4))
        tg = np.clip(grip[:, 0] + rng.normal(0, 0.2, n), 0, 1)
        thumb = np.stack([-10 + 45 * tg, 55 * tg, np.clip(70 * tg + rng.normal(0, 8, n), -10, 80)], -1)
        thumb += rng.normal(0, 4, (n, 3))
    flexion = np.concatenate([np.stack([mcp, pip, dip], -1), thumb[:, None, :]], axis=1) * deg
    thumb_abduction = rng.uniform(25, 65, n) * deg
    thumb_opposition = rng.uniform(20, 70, n) * deg

    # Global orientation: in-plane roll anywhere in +-100 deg, yaw +-70 deg, pitch +-45 deg.
    roll = rng.uniform(-100, 100, n) * deg
    yaw = rng.uniform(-70, 70, n) * deg
    pitch = rng.uniform(-45, 45, n) * deg
    rotation = _axis_rotation(roll, 2) @ _axis_rotation(yaw, 1) @ _axis_rotation(pitch, 0) @ _REST_ROTATION
    scale = rng.uniform(*_SCALE_RANGE, n)

    # Place the palm centre at a random depth and somewhere in the central part of the sensor.
    z = rng.uniform(*_DISTANCE_MM[domain], n)
    u = rng.uniform(0.25, 0.75, n) * SENSOR_W
    v = rng.uniform(0.25, 0.75, n) * SENSOR_H
    palm_centre = np.stack([(u - SENSOR_W / 2) * z / SENSOR_F_PX, (v - SENSOR_H / 2) * z / SENSOR_F_PX, z], -1)
    translation = palm_centre - np.einsum("bij,j->bi", rotation, _PALM_CENTRE) * scale[:, None]

    # Forearm: continues the palm backwards with wrist flexion/deviation; an arm comes from the
    # body behind the hand, so a direction pointing at the camera is mirrored away from it.
    wrist = _axis_rotation(rng.uniform(-35, 35, n) * deg, 0) @ _axis_rotation(rng.uniform(-20, 20, n) * deg, 2)
    forearm_dir = np.einsum("bij,bj->bi", rotation @ wrist, np.broadcast_to([0.0, -1.0, 0.0], (n, 3)))
    forearm_dir[:, 2] = np.abs(forearm_dir[:, 2])
    return HandPoses(flexion, spread, thumb_abduction, thumb_opposition, rotation, translation, scale, forearm_dir)


@dataclass(frozen=True)
class HandGeometry:
    """Camera-frame geometry (mm, float64). chains: (B, 5, 4, 3) joint points of each finger from
    its base to its tip; nyu: (B, 14, 3) evaluated joints; palm_*: the ellipsoid."""

    chains: np.ndarray
    joint_radius: np.ndarray  # (B, 5, 4)
    segment_radius: np.ndarray  # (B, 5, 3)
    palm_centre: np.ndarray  # (B, 3)
    palm_axes: np.ndarray  # (B, 3, 3) columns = semi-axis directions
    palm_semi: np.ndarray  # (B, 3)
    nyu: np.ndarray
    forearm: np.ndarray  # (B, 2, 3) wrist end, elbow end
    forearm_radius: np.ndarray  # (B,)


def hand_geometry(poses: HandPoses) -> HandGeometry:
    """Forward kinematics: every finger is a planar chain in the plane spanned by its forward
    direction and its bend direction; angles accumulate along the chain."""
    b = len(poses)
    spread_deg = _REST_SPREAD_DEG + _SPREAD_GAIN_DEG * poses.spread
    a = spread_deg * (np.pi / 180.0)
    forward = np.zeros((b, 5, 3))
    bend = np.zeros((b, 5, 3))
    forward[:, :4] = np.stack([np.sin(a), np.cos(a), np.zeros_like(a)], -1)
    bend[:, :4, 2] = 1.0
    # The thumb leaves the palm at `thumb_abduction` from the finger axis, slightly out of the palm
    # plane; it flexes towards the palm and across it (opposition), not straight down.
    beta, rho = poses.thumb_abduction, poses.thumb_opposition
    f_thumb = np.stack([np.sin(beta), np.cos(beta), np.full(b, 0.25)], -1)
    f_thumb /= np.linalg.norm(f_thumb, axis=-1, keepdims=True)
    across = np.stack([-np.cos(beta), np.sin(beta), np.zeros(b)], -1)
    n_thumb = np.cos(rho)[:, None] * np.array([0.0, 0.0, 1.0]) + np.sin(rho)[:, None] * across
    n_thumb -= (n_thumb * f_thumb).sum(-1, keepdims=True) * f_thumb
    n_thumb /= np.linalg.norm(n_thumb, axis=-1, keepdims=True)
    forward[:, 4], bend[:, 4] = f_thumb, n_thumb

    phi = np.cumsum(poses.flexion, axis=-1)  # (B, 5, 3)
    dirs = np.cos(phi)[..., None] * forward[:, :, None] + np.sin(phi)[..., None] * bend[:, :, None]
    steps = dirs * _SEGMENT_LENGTH[None, :, :, None]
    local = np.concatenate(
        [
            np.broadcast_to(_FINGER_BASE[None, :, None], (b, 5, 1, 3)),
            _FINGER_BASE[None, :, None] + np.cumsum(steps, axis=2),
        ],
        axis=2,
    )

    s = poses.scale
    rot, tr = poses.rotation, poses.translation

    def to_camera(p):  # p: (B, ..., 3) in the hand frame
        flat = p.reshape(b, -1, 3) * s[:, None, None]
        return (np.einsum("bij,bkj->bki", rot, flat) + tr[:, None]).reshape(p.shape)

    chains = to_camera(local)
    palm_pts = to_camera(np.broadcast_to(np.concatenate([_WRIST_POINTS, [_PALM_CENTRE]]), (b, 3, 3)))
    nyu = np.concatenate(
        [
            chains[:, :4, [3, 1]].reshape(b, 8, 3),  # tip, mid (PIP) for pinky, ring, middle, index
            chains[:, 4, [3, 2, 1]],  # thumb tip, IP, MCP
            palm_pts,
        ],
        axis=1,
    )
    wrist = to_camera(np.broadcast_to(_FOREARM_START, (b, 3)))
    forearm = np.stack([wrist, wrist + poses.forearm_dir * (_FOREARM_LENGTH * s)[:, None]], 1)
    return HandGeometry(
        chains=chains,
        joint_radius=_JOINT_RADIUS[None] * s[:, None, None],
        segment_radius=_SEGMENT_RADIUS[None] * s[:, None, None],
        palm_centre=palm_pts[:, 2],
        palm_axes=rot,
        palm_semi=_PALM_SEMI_AXES[None] * s[:, None],
        nyu=nyu,
        forearm=forearm,
        forearm_radius=_FOREARM_RADIUS * s,
    )


# ----------------------------------------------------------------------------------- camera
@dataclass(frozen=True)
class CropCamera:
    """Pinhole camera of the stored S x S crop: u = focal * X / Z + cu, v = focal * Y / Z + cv."""

    focal: np.ndarray  # (B,)
    cu: np.ndarray
    cv: np.ndarray
    z_centre: np.ndarray  # depth (mm) that maps to normalized depth 0 (the hand's median depth)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(B, K, 3) camera-frame mm -> (B, K, 3) float32 (u, v, d_norm), d_norm clipped to [-1, 1]."""
        z = points[..., 2]
        u = self.focal[:, None] * points[..., 0] / z + self.cu[:, None]
        v = self.focal[:, None] * points[..., 1] / z + self.cv[:, None]
        d = np.clip((z - self.z_centre[:, None]) / HALF_CUBE_MM, -1, 1)
        return np.stack([u, v, d], -1).astype(np.float32)

    def rays(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Ray direction (x, y, 1) of each pixel centre, separably: x (B, 1, S), y (B, S, 1)."""
        grid = np.arange(size, dtype=np.float64)
        x = (grid[None, :] - self.cu[:, None]) / self.focal[:, None]
        y = (grid[None, :] - self.cv[:, None]) / self.focal[:, None]
        return x[:, None, :].astype(np.float32), y[:, :, None].astype(np.float32)


def crop_camera(nyu_joints: np.ndarray, size: int) -> CropCamera:
    """Centre a 2 * HALF_CUBE_MM cube on the joint centroid and map its projection onto S pixels."""
    centre = nyu_joints.mean(axis=1)
    focal = size * centre[:, 2] / (2 * HALF_CUBE_MM)
    mid = (size - 1) / 2.0
    return CropCamera(
        focal=focal,
        cu=mid - focal * centre[:, 0] / centre[:, 2],
        cv=mid - focal * centre[:, 1] / centre[:, 2],
        z_centre=centre[:, 2],
    )


# --------------------------------------------------------------------------------- ray cast
def _cast_spheres(zbuf, dots, centres, radii, x, y, dd, inv_dd):
    """Nearest hit t (= depth, since rays are (x, y, 1)) of |t d - c| = r, fmin-ed into zbuf.
    Misses give NaN (sqrt of a negative) which np.fmin ignores, sparing a masking pass."""
    for k in range(centres.shape[1]):
        c = centres[:, k]
        dc = x * c[:, 0, None, None].astype(np.float32) + (y * c[:, 1, None, None] + c[:, 2, None, None]).astype(
            np.float32
        )
        dots.append(dc)
        cc = ((c * c).sum(-1) - radii[:, k] ** 2).astype(np.float32)[:, None, None]
        h = dc * dc
        h -= cc * dd
        np.sqrt(h, out=h)
        np.subtract(dc, h, out=h)
        h *= inv_dd
        np.fmin(zbuf, h, out=zbuf)


def _cast_cylinders(zbuf, dot_a, dot_b, a, b, radii, dd):
    """Open cylinder between a and b (the end spheres are drawn separately): solve
    |perp(t d - a)|^2 = r^2 and keep hits whose axial coordinate lies within the segment."""
    ba = b - a
    baba = (ba * ba).sum(-1)
    baa = (ba * a).sum(-1)
    cc = baba * (a * a).sum(-1) - baa * baa - radii**2 * baba
    f32 = lambda v: v.astype(np.float32)[:, None, None]
    baba32, baa32, cc32 = f32(baba), f32(baa), f32(cc)
    bard = dot_b - dot_a
    qa = baba32 * dd - bard * bard
    qb = baa32 * bard - baba32 * dot_a
    h = qb * qb - qa * cc32
    np.sqrt(h, out=h)
    t = -qb
    t -= h
    t /= qa
    axial = t * bard
    axial -= baa32
    # keep 0 < axial < baba; outside, the hit belongs to the end spheres (or nothing)
    outside = axial * (baba32 - axial) <= 0
    t[outside] = np.nan
    np.fmin(zbuf, t, out=zbuf)


def _cast_ellipsoid(zbuf, centre, axes, semi, x, y):
    """Ellipsoid = unit sphere in scaled axes: with d' = S^-1 A^T d and c' = S^-1 A^T c solve
    |t d' - c'| = 1."""
    m = axes / semi[:, None, :]  # column k = axis_k / semi_k
    cp = np.einsum("bik,bi->bk", m, centre)
    dp = [
        x * m[:, 0, k, None, None].astype(np.float32)
        + (y * m[:, 1, k, None, None] + m[:, 2, k, None, None]).astype(np.float32)
        for k in range(3)
    ]
    dd = dp[0] * dp[0] + dp[1] * dp[1] + dp[2] * dp[2]
    dc = dp[0] * cp[:, 0, None, None].astype(np.float32)
    dc += dp[1] * cp[:, 1, None, None].astype(np.float32)
    dc += dp[2] * cp[:, 2, None, None].astype(np.float32)
    cc = ((cp * cp).sum(-1) - 1.0).astype(np.float32)[:, None, None]
    h = dc * dc - dd * cc
    np.sqrt(h, out=h)
    t = (dc - h) / dd
    np.fmin(zbuf, t, out=zbuf)


def raycast_chains(zbuf, cam: CropCamera, size: int, points, joint_radius, segment_radius):
    """Draw sphere-swept chains (B, C, P, 3) into zbuf (B, S, S) float32 (mm, inf = nothing):
    a sphere at every point and a cylinder between consecutive points."""
    x, y = cam.rays(size)
    dd = x * x + y * y + 1.0
    inv_dd = 1.0 / dd
    with np.errstate(invalid="ignore", divide="ignore"):  # misses are NaN by design
        for c in range(points.shape[1]):
            dots: list[np.ndarray] = []
            _cast_spheres(zbuf, dots, points[:, c], joint_radius[:, c], x, y, dd, inv_dd)
            for s in range(points.shape[2] - 1):
                _cast_cylinders(
                    zbuf, dots[s], dots[s + 1], points[:, c, s], points[:, c, s + 1], segment_radius[:, c, s], dd
                )
    return zbuf


def raycast_hand(geom: HandGeometry, cam: CropCamera, size: int, forearm: bool = False):
    """Depth (mm, float32, inf where no surface) of the hand, and of hand + forearm when asked.

    Returns (hand_only, with_forearm or None)."""
    b = geom.chains.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        zbuf = np.full((b, size, size), np.inf, dtype=np.float32)
        x, y = cam.rays(size)
        _cast_ellipsoid(zbuf, geom.palm_centre, geom.palm_axes, geom.palm_semi, x, y)
        raycast_chains(zbuf, cam, size, geom.chains, geom.joint_radius, geom.segment_radius)
        if not forearm:
            return zbuf, None
        full = zbuf.copy()
        r = np.repeat(geom.forearm_radius[:, None, None], 2, axis=2)
        raycast_chains(full, cam, size, geom.forearm[:, None], r, r[:, :, :1])
    return zbuf, full


def render_poses(poses: HandPoses, size: int, forearm: bool = False):
    """Ray-cast posed hands. Returns (depth_mm, with_forearm_mm or None, joints_uvd, camera)."""
    geom = hand_geometry(poses)
    cam = crop_camera(geom.nyu, size)
    parts_hand, parts_full = [], []
    for s in range(0, len(poses), _SUB_BATCH):
        sl = slice(s, s + _SUB_BATCH)
        sub_geom = HandGeometry(**{k: getattr(geom, k)[sl] for k in geom.__dataclass_fields__})
        sub_cam = CropCamera(cam.focal[sl], cam.cu[sl], cam.cv[sl], cam.z_centre[sl])
        hand, full = raycast_hand(sub_geom, sub_cam, size, forearm)
        parts_hand.append(hand)
        parts_full.append(full)
    hand = np.concatenate(parts_hand)
    full = np.concatenate(parts_full) if forearm else None
    # Normalize depth around the median of the hand's pixels, as the NYU importer does with the
    # synthdepth mask, so both sources put a hand's bulk at d = 0.
    hand_pixels = np.where(np.isfinite(hand), hand, np.nan).reshape(len(hand), -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty view falls back below
        median = np.nanmedian(hand_pixels, axis=1)
    cam = replace(cam, z_centre=np.where(np.isfinite(median), median, cam.z_centre))
    return hand, full, cam.project(geom.nyu), cam


def normalize_depth(z_mm: np.ndarray, z_centre: np.ndarray) -> np.ndarray:
    """mm (inf = nothing) -> the schema's [-1, 1] (far = 1.0 for background and holes)."""
    d = (z_mm - z_centre[:, None, None].astype(np.float32)) * np.float32(1.0 / HALF_CUBE_MM)
    d[~np.isfinite(d)] = 1.0
    return np.clip(d, -1.0, 1.0, out=d).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- Kinect model
def _smooth_field(rng, b, size, cells=5):
    """A smooth random field (unit variance at the control points): bilinear upsampling of a
    cells x cells Gaussian grid, done as two small matrix products."""
    grid = rng.normal(0, 1, (b, cells, cells))
    pos = np.linspace(0, cells - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    w = pos - lo
    interp = np.zeros((size, cells))
    interp[np.arange(size), lo] = 1 - w
    interp[np.arange(size), lo + 1] = w
    return interp @ grid @ interp.T


def _min_max_3x3(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image 3x3 minimum and maximum of (B, S, S), edges replicated: cv2.erode/dilate, exact
    like the scipy.ndimage filters they replaced (size (1, 3, 3), mode "nearest") and 3x faster on
    the sensor's 64x64 float32 sub-batches (docs/performance.md)."""
    from simgan.opencv import cv2

    kernel = np.ones((3, 3), np.uint8)
    zmin, zmax = np.empty_like(z), np.empty_like(z)
    for i, image in enumerate(z):
        cv2.erode(image, kernel, dst=zmin[i], borderType=cv2.BORDER_REPLICATE)
        cv2.dilate(image, kernel, dst=zmax[i], borderType=cv2.BORDER_REPLICATE)
    return zmin, zmax


def kinect_sensor(
    z_mm: np.ndarray, focal_px: np.ndarray, rng: np.random.Generator, centres_px: np.ndarray | None = None
) -> np.ndarray:
    """Corrupt clean depth (B, S, S) in mm as a structured-light (Kinect v1) camera would.

    inf in the input is replaced by a wall KINECT_WALL_MM away (so edges against the background have
    a far side); the output has inf for holes, ready for normalize_depth. `focal_px` is the focal of
    the stored image (crop pixels), which sets shadow widths; `centres_px` (B, K, 2) are (u, v)
    points near which dropout blobs fall (the joints), else blobs fall anywhere. Effects:
    - projector shadows: the projector sits KINECT_BASELINE_MM to the +u side, so a surface point is
      unlit (a hole) when a nearer surface within a few pixels towards +u covers it as seen from the
      projector: focal * baseline * (1/z_near - 1/z) >= k - slack, k the pixel offset;
    - flying pixels: next to a depth edge (3x3 range > KINECT_EDGE_MM) a far-side pixel takes, with
      probability KINECT_FLYING_PROB, a depth between the two sides (biased towards the near
      side); a near-side pixel does so with KINECT_FLYING_PROB_NEAR;
    - noise with sigma growing as z^2 (per pixel plus a smooth correlated part);
    - disparity quantization: disparity = f * b / z rounded to KINECT_DISPARITY_STEP_PX;
    - dropout blobs: Poisson(KINECT_BLOBS_PER_IMAGE) small ellipses of missing depth per image."""
    b, size, _ = z_mm.shape
    f32 = np.float32
    wall = rng.uniform(*KINECT_WALL_MM, b).astype(f32)[:, None, None]
    z = np.where(np.isfinite(z_mm), z_mm, wall).astype(f32)

    # Shadows, from the clean geometry. With slack < 1 the test implies a nearer occluder. Offsets
    # stop at KINECT_SHADOW_REACH_PX: wider shadows only fall on the wall, beyond the crop's depth.
    inv_z = 1.0 / z
    slack = rng.uniform(*KINECT_SHADOW_SLACK_PX, b)[:, None, None]
    fb = np.asarray(focal_px, dtype=np.float64)[:, None, None] * KINECT_BASELINE_MM
    shadow = np.zeros(z.shape, dtype=bool)
    for k in range(1, KINECT_SHADOW_REACH_PX + 1):
        threshold = ((k - slack) / fb).astype(f32)
        shadow[..., :-k] |= inv_z[..., k:] >= inv_z[..., :-k] + threshold

    # Flying pixels: a pixel whose footprint straddles an edge returns a mix of both sides. Most
    # show on the far side (trails behind the silhouette); a few near-side pixels sink back.
    zmin, zmax = _min_max_3x3(z)
    far_side = (z - zmin) > KINECT_EDGE_MM
    near_side = ((zmax - z) > KINECT_EDGE_MM) & ~far_side
    u = rng.random(z.shape, dtype=f32)
    mix = rng.random(z.shape, dtype=f32) ** 3
    z = np.where(far_side & (u < KINECT_FLYING_PROB), zmin + mix * (z - zmin), z)
    z = np.where(near_side & (u < KINECT_FLYING_PROB_NEAR), z + mix * (zmax - z), z)

    # Noise growing with z^2, then disparity quantization.
    noise = rng.standard_normal(z.shape, dtype=f32) * f32(KINECT_NOISE_MM)
    noise += (KINECT_SMOOTH_NOISE_MM * _smooth_field(rng, b, size)).astype(f32)
    z += noise * (z * f32(1e-3)) ** 2
    fb_sensor = f32(SENSOR_F_PX * KINECT_BASELINE_MM)
    step = f32(KINECT_DISPARITY_STEP_PX)
    levels = np.maximum(np.round(fb_sensor / (np.maximum(z, f32(1.0)) * step)), f32(1.0))
    z = fb_sensor / (levels * step)

    # Dropout blobs.
    n_blobs = rng.poisson(KINECT_BLOBS_PER_IMAGE, b)
    most = int(n_blobs.max(initial=0))
    holes = shadow
    if most:
        if centres_px is None:
            centres = rng.uniform(0, size - 1, (b, most, 2))
        else:
            pick = rng.integers(0, centres_px.shape[1], (b, most))
            centres = np.take_along_axis(centres_px, pick[..., None], axis=1) + rng.normal(0, 2.0, (b, most, 2))
        radii = rng.uniform(*KINECT_BLOB_RADIUS_PX, (b, most, 2))
        grid = np.arange(size, dtype=np.float64)
        for k in range(most):
            du = (grid[None, None, :] - centres[:, k, 0, None, None]) / radii[:, k, 0, None, None]
            dv = (grid[None, :, None] - centres[:, k, 1, None, None]) / radii[:, k, 1, None, None]
            holes = holes | (((du * du + dv * dv) <= 1.0) & (k < n_blobs)[:, None, None])
    z[holes] = np.inf
    return z


# ----------------------------------------------------------------------------- public API
def _check_domain(domain):
    if domain not in DOMAINS:
        raise SimganError(f"domain: expected one of {DOMAINS}, got {domain!r}")


def _check_args(n, seed, domain, size, workers, chunk):
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(n) or n <= 0:
        raise SimganError(f"n: expected a positive integer number of hands, got {n!r}")
    if not is_int(seed) or seed < 0:
        raise SimganError(f"seed: expected a non-negative integer, got {seed!r}")
    _check_domain(domain)
    if not is_int(size) or size < MIN_SIZE:
        raise SimganError(f"size: expected an integer >= {MIN_SIZE} (pixels per side), got {size!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise SimganError(f"workers: expected None or an integer >= 1, got {workers!r}")
    if not is_int(chunk) or chunk < 1:
        raise SimganError(f"chunk: expected an integer >= 1, got {chunk!r}")


def _render_chunk(start: int, stop: int, rng: np.random.Generator, domain: str, size: int):
    """One map_chunks work item. The order of draws from rng is part of the data's identity."""
    poses = sample_poses(stop - start, rng, domain)
    hand, full, joints, cam = render_poses(poses, size, forearm=True)
    if domain == "synthetic":
        return {"depth": normalize_depth(full, cam.z_centre), "joints": joints}
    centres = joints[..., :2].astype(np.float64)
    # Sub-batches keep the sensor's many full-size temporaries in cache.
    sensed = np.concatenate(
        [
            kinect_sensor(full[s : s + _SUB_BATCH], cam.focal[s : s + _SUB_BATCH], rng, centres[s : s + _SUB_BATCH])
            for s in range(0, len(poses), _SUB_BATCH)
        ]
    )
    return {
        "depth": normalize_depth(sensed, cam.z_centre),
        "joints": joints,
        "mask": np.isfinite(hand).astype(np.uint8),
    }


def _chunks(n, seed, domain, size, workers, chunk, progress):
    from tqdm import tqdm

    fn = functools.partial(_render_chunk, domain=domain, size=size)
    with tqdm(total=n, unit="hand", desc=f"hands/{domain}", disable=not progress) as bar:
        for _, arrays in map_chunks(fn, n, seed, workers=workers, chunk=chunk):
            bar.update(len(arrays["depth"]))
            yield arrays


def render_hands(
    n: int,
    seed: int,
    domain: str = "synthetic",
    size: int = 64,
    workers: int | None = None,
    chunk: int = 512,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """n depth hands in memory: depth (n, S, S) float32 in [-1, 1], joints (n, 14, 3) float32, and
    for domain="real" mask (n, S, S) uint8. Same (seed, n, chunk) -> same bytes for any workers."""
    _check_args(n, seed, domain, size, workers, chunk)
    return concat_chunks(list(_chunks(n, seed, domain, size, workers, chunk, progress)))


def simulate_hands_to_file(
    path,
    n: int,
    seed: int,
    domain: str = "synthetic",
    size: int = 64,
    workers: int | None = None,
    chunk: int = 512,
    progress: bool = True,
) -> None:
    """Stream n hands into an HDF5 data set (simgan.data.format) chunk by chunk, so memory stays flat."""
    _check_args(n, seed, domain, size, workers, chunk)
    from simgan.data.format import DatasetWriter  # lazily: the renderer works without the format

    attrs = {
        "format_version": 1,
        "task": "hand",
        "domain": domain,
        "source": "embedded-hands",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
    }
    with DatasetWriter(path, attrs) as writer:
        for arrays in _chunks(n, seed, domain, size, workers, chunk, progress):
            writer.append(arrays)
