"""Embedded depth-hand simulator: geometry, labels, determinism, the Kinect-like real domain."""

import numpy as np
import pytest

from simgan.io import SimganError
from simgan.parallel import chunk_seeds
from simgan.sim import hands as H

SIZE = 64


def _camera(focal=100.0, z_centre=500.0, size=SIZE, b=1):
    mid = (size - 1) / 2
    return H.CropCamera(np.full(b, focal), np.full(b, mid), np.full(b, mid), np.full(b, z_centre))


def _reference_spheres(cam, size, centres, radii):
    """float64 nearest hit of every pixel ray over a set of spheres (B=1), inf where none."""
    grid = np.arange(size, dtype=np.float64)
    x = (grid[None, :] - cam.cu[0]) / cam.focal[0]
    y = (grid[:, None] - cam.cv[0]) / cam.focal[0]
    d = np.stack(np.broadcast_arrays(x, y, np.ones_like(x)), -1)  # (S, S, 3), z component 1
    dd = (d * d).sum(-1)
    best = np.full((size, size), np.inf)
    for c, r in zip(centres, radii):
        dc = d @ c
        h = dc * dc - dd * (c @ c - r * r)
        t = np.where(h >= 0, (dc - np.sqrt(np.maximum(h, 0))) / dd, np.inf)
        best = np.minimum(best, t)
    return best


# ------------------------------------------------------------------------------ geometry
def test_zbuffer_keeps_nearest_surface_whatever_the_drawing_order():
    cam = _camera()
    near = np.array([0.0, 0.0, 480.0]), 20.0
    far = np.array([15.0, 5.0, 510.0]), 35.0  # larger, behind, overlapping in the image
    images = []
    for order in ([near, far], [far, near]):
        zbuf = np.full((1, SIZE, SIZE), np.inf, np.float32)
        pts = np.array([[p for p, _ in order]])  # one "chain" per sphere would add cylinders
        rad = np.array([[r for _, r in order]])
        for k in range(2):  # each sphere is a one-point chain: no cylinder
            r = rad[:, k : k + 1, None]
            H.raycast_chains(zbuf, cam, SIZE, pts[:, k : k + 1, None], r, r[..., :0])
        images.append(zbuf[0])
    expected = _reference_spheres(cam, SIZE, [near[0], far[0]], [near[1], far[1]])
    assert np.array_equal(np.isfinite(images[0]), np.isfinite(expected))
    hit = np.isfinite(expected)
    np.testing.assert_allclose(images[0][hit], expected[hit], atol=0.05)
    np.testing.assert_array_equal(images[0], images[1])
    # where both spheres cover a pixel, the near one's surface is what is kept
    near_only = _reference_spheres(cam, SIZE, [near[0]], [near[1]])
    far_only = _reference_spheres(cam, SIZE, [far[0]], [far[1]])
    overlap = np.isfinite(near_only) & np.isfinite(far_only)
    assert overlap.sum() > 50 and (near_only[overlap] < far_only[overlap]).all()
    np.testing.assert_allclose(images[0][overlap], near_only[overlap], atol=0.05)


def test_capsule_equals_a_dense_sweep_of_spheres():
    cam = _camera(focal=120.0, z_centre=600.0)
    a, b, r = np.array([-60.0, 30.0, 580.0]), np.array([50.0, -40.0, 640.0]), 14.0
    zbuf = np.full((1, SIZE, SIZE), np.inf, np.float32)
    H.raycast_chains(zbuf, cam, SIZE, np.array([[[a, b]]]), np.full((1, 1, 2), r), np.full((1, 1, 1), r))
    # A capsule is the union of spheres along its axis; 3000 of them approximate it to ~1e-3 mm.
    sweep = a + np.linspace(0, 1, 3000)[:, None] * (b - a)
    expected = _reference_spheres(cam, SIZE, sweep, np.full(len(sweep), r))
    hit = np.isfinite(expected) & np.isfinite(zbuf[0])
    assert (np.isfinite(expected) != np.isfinite(zbuf[0])).sum() <= 2  # grazing rays only
    assert hit.sum() > 100
    np.testing.assert_allclose(zbuf[0][hit], expected[hit], atol=0.1)


def test_tip_joints_project_onto_their_rendered_fingertips():
    rng = np.random.default_rng(7)
    poses = H.sample_poses(96, rng, "synthetic")
    hand, _, joints, cam = H.render_poses(poses, SIZE)
    geom = H.hand_geometry(poses)
    tips = [0, 2, 4, 6, 8]
    radius = geom.joint_radius[:, [0, 1, 2, 3, 4], 3]  # tip sphere of pinky..thumb
    centre = geom.nyu[:, tips]  # (B, 5, 3) mm
    # exact projection through the crop camera
    u = cam.focal[:, None] * centre[..., 0] / centre[..., 2] + cam.cu[:, None]
    np.testing.assert_allclose(joints[:, tips, 0], u, atol=1e-3)
    col = np.rint(joints[:, tips, 0]).astype(int)
    row = np.rint(joints[:, tips, 1]).astype(int)
    assert col.min() >= 0 and row.min() >= 0 and max(col.max(), row.max()) < SIZE
    rendered = hand[np.arange(len(hand))[:, None], row, col]
    assert np.isfinite(rendered).all(), "every tip pixel lies on the hand"
    # Unoccluded tips: the visible surface is the front of the tip sphere, about a radius nearer.
    front = centre[..., 2] - radius
    unoccluded = rendered > front - 2.0
    assert unoccluded.mean() > 0.6
    err = np.abs(rendered - front)[unoccluded]
    assert np.quantile(err, 0.95) < 0.35 * radius.max()
    # ... and in the stored normalized units the same holds against the joints' d channel
    depth = H.normalize_depth(hand, cam.z_centre)
    d_pix = depth[np.arange(len(hand))[:, None], row, col]
    gap = (joints[:, tips, 2] - d_pix)[unoccluded] * H.HALF_CUBE_MM  # ~ radius, in mm
    assert np.all(gap > 0) and np.median(np.abs(gap - radius[unoccluded])) < 2.0


def _on_axis(poses):
    """Shift poses so the joint centroid sits on the optical axis."""
    centroid = H.hand_geometry(poses).nyu.mean(1)
    shift = np.zeros_like(centroid)
    shift[:, :2] = centroid[:, :2]
    return H.replace(poses, translation=poses.translation - shift)


def _rotate_about_camera_axis(poses, angle):
    rz = H._axis_rotation(np.full(len(poses), angle), 2)
    return H.replace(
        poses,
        rotation=rz @ poses.rotation,
        translation=np.einsum("bij,bj->bi", rz, poses.translation),
        forearm_dir=np.einsum("bij,bj->bi", rz, poses.forearm_dir),
    )


def test_rotation_about_the_optical_axis_rotates_joints_and_image():
    poses = _on_axis(H.sample_poses(12, np.random.default_rng(3), "synthetic"))
    hand0, _, joints0, _ = H.render_poses(poses, SIZE)
    mid = (SIZE - 1) / 2
    for angle in (np.deg2rad(30.0), np.pi / 2):
        hand1, _, joints1, _ = H.render_poses(_rotate_about_camera_axis(poses, angle), SIZE)
        du, dv = joints0[..., 0] - mid, joints0[..., 1] - mid
        c, s = np.cos(angle), np.sin(angle)
        np.testing.assert_allclose(joints1[..., 0] - mid, c * du - s * dv, atol=1e-3)
        np.testing.assert_allclose(joints1[..., 1] - mid, s * du + c * dv, atol=1e-3)
        # d is relative to the hand's median pixel depth, which a resampled view moves slightly
        shift = joints1[..., 2] - joints0[..., 2]
        np.testing.assert_allclose(shift, shift[:, :1] + 0 * shift, atol=1e-4)
        assert np.abs(shift).max() < 0.03
    # a quarter turn maps the pixel grid onto itself: new[v', u'] = old[v, u], u' = S-1-v, v' = u
    expected = np.transpose(hand0, (0, 2, 1))[:, :, ::-1]
    same_support = np.isfinite(expected) == np.isfinite(hand1)
    assert same_support.mean() > 0.998
    both = np.isfinite(expected) & np.isfinite(hand1)
    assert np.quantile(np.abs(expected[both] - hand1[both]), 0.999) < 0.1  # mm, float32 rounding


# ------------------------------------------------------------------------ public outputs
@pytest.mark.parametrize("domain", ["synthetic", "real"])
def test_schema_shapes_dtypes_ranges(domain):
    out = H.render_hands(40, seed=5, domain=domain, size=48, workers=1, chunk=16)
    keys = {"depth", "joints"} | ({"mask"} if domain == "real" else set())
    assert set(out) == keys
    depth, joints = out["depth"], out["joints"]
    assert depth.shape == (40, 48, 48) and depth.dtype == np.float32
    assert joints.shape == (40, len(H.JOINT_NAMES), 3) and joints.dtype == np.float32
    assert depth.min() >= -1 and depth.max() <= 1 and np.isfinite(depth).all()
    assert (depth == 1.0).mean() > 0.3, "background is far"
    assert (depth < 1.0).reshape(40, -1).sum(1).min() > 50, "every image shows a hand"
    assert joints[..., :2].min() >= 0 and joints[..., :2].max() <= 47
    assert np.abs(joints[..., 2]).max() <= 1
    if domain == "real":
        assert out["mask"].dtype == np.uint8 and out["mask"].shape == depth.shape
        assert set(np.unique(out["mask"])) == {0, 1}
    assert len(H.JOINT_NAMES) == 14 and len(set(H.JOINT_NAMES)) == 14
    assert all(0 <= i < 14 and 0 <= j < 14 and i != j for i, j in H.HAND_SKELETON)
    # every joint is drawn: the skeleton connects all 14
    assert set(np.ravel(H.HAND_SKELETON)) == set(range(14))


def test_same_seed_same_bytes_for_any_worker_count():
    a = H.render_hands(36, seed=11, domain="real", size=32, workers=1, chunk=12)
    b = H.render_hands(36, seed=11, domain="real", size=32, workers=2, chunk=12)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    c = H.render_hands(36, seed=12, domain="real", size=32, workers=1, chunk=12)
    assert a["depth"].tobytes() != c["depth"].tobytes()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=0), "n"),
        (dict(n=-3), "n"),
        (dict(n=2.5), "n"),
        (dict(size=8), "size"),
        (dict(size=15), "size"),
        (dict(domain="refined"), "domain"),
        (dict(seed=-1), "seed"),
        (dict(workers=0), "workers"),
        (dict(chunk=0), "chunk"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, name):
    args = dict(n=4, seed=0, size=32) | kwargs
    with pytest.raises(SimganError, match=rf"^{name}: expected"):
        H.render_hands(**args)
    with pytest.raises(SimganError, match=rf"^{name}: expected"):
        H.simulate_hands_to_file("/nonexistent/never-written.h5", **args)


# --------------------------------------------------------------------------- real domain
def _real_pipeline_clean(n, seed, size):
    """The clean, forearm-free rendering of the real domain's poses (one chunk)."""
    rng = np.random.default_rng(chunk_seeds(seed, 1)[0])
    poses = H.sample_poses(n, rng, "real")
    hand, _, joints, cam = H.render_poses(poses, size)
    return hand, joints, cam


def test_real_mask_is_the_clean_rendering_and_the_sensor_corrupts_the_hand():
    n, seed = 48, 21
    real = H.render_hands(n, seed, domain="real", size=SIZE, workers=1, chunk=n)
    hand, joints, cam = _real_pipeline_clean(n, seed, SIZE)
    np.testing.assert_array_equal(real["mask"], np.isfinite(hand).astype(np.uint8))
    np.testing.assert_array_equal(real["joints"], joints)
    clean = H.normalize_depth(hand, cam.z_centre)
    mask = real["mask"].astype(bool)
    depth = real["depth"]
    # holes (1.0) inside the hand: shadows, blobs, sunk edge pixels; the clean rendering has none
    hole_frac = (depth[mask] >= 1.0).mean()
    assert 0.02 < hole_frac < 0.3
    assert (clean[mask] < 1.0).all()
    # noise near the hand: hand-interior pixels (3x3 all hand) away from holes
    from scipy import ndimage

    interior = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3))) & (depth < 1.0)
    diff = (depth - clean)[interior] * H.HALF_CUBE_MM
    assert 1.5 < np.median(np.abs(diff)) < 15.0  # mm; the forearm may cover some, hence median
    # forearm in view: surface outside the hand's support, beyond the edge band
    outside = ~ndimage.binary_dilation(mask, structure=np.ones((1, 5, 5)))
    per_image = ((depth < 1.0) & outside).reshape(n, -1).sum(1)
    assert (per_image > 20).mean() > 0.7


def test_synthetic_hands_are_clean_renders_with_the_forearm_in_view():
    """The simulator draws what the sensor sees (hand + forearm), without the sensor: the domains
    differ in appearance and pose statistics, not in what is in the picture. Without the forearm
    (generator hands-1) a synthetic-trained estimator put joints on the real forearm: 37% within
    5 px on real hands against 52% with it (real-trained 56%; docs/experiments.md)."""
    n, seed = 48, 21
    syn = H.render_hands(n, seed, domain="synthetic", size=SIZE, workers=1, chunk=n)
    rng = np.random.default_rng(chunk_seeds(seed, 1)[0])
    hand, full, joints, cam = H.render_poses(H.sample_poses(n, rng, "synthetic"), SIZE, forearm=True)
    np.testing.assert_array_equal(syn["depth"], H.normalize_depth(full, cam.z_centre))
    np.testing.assert_array_equal(syn["joints"], joints)
    from scipy import ndimage

    outside = ~ndimage.binary_dilation(np.isfinite(hand), structure=np.ones((1, 5, 5)))
    per_image = ((syn["depth"] < 1.0) & outside).reshape(n, -1).sum(1)
    assert (per_image > 20).mean() > 0.7


def _plate_scene(b, plate_mm, wall_mm):
    z = np.full((b, SIZE, SIZE), wall_mm, np.float32)
    z[:, 20:44, 20:44] = plate_mm
    return z


def test_kinect_shadows_fall_on_the_minus_u_side_of_a_depth_edge():
    b, focal = 16, 128.0
    out = H.kinect_sensor(_plate_scene(b, 600.0, 700.0), np.full(b, focal), np.random.default_rng(0))
    rows = slice(22, 42)
    # shadow width = f b (1/600 - 1/700) = 2.29 px: columns 18, 19 lose depth, 45, 46 keep it
    left = ~np.isfinite(out[:, rows, 18:20])
    right = ~np.isfinite(out[:, rows, 44:46])
    assert left.mean() > 0.9 and right.mean() < 0.1
    far_left = ~np.isfinite(out[:, rows, 8:12])
    assert far_left.mean() < 0.1


def test_kinect_flying_pixels_sit_between_foreground_and_background():
    b = 16
    out = H.kinect_sensor(_plate_scene(b, 600.0, 700.0), np.full(b, 128.0), np.random.default_rng(1))
    cols = slice(24, 40)
    edge_rows = np.concatenate([out[:, 19, cols], out[:, 44, cols]])  # wall pixels touching the plate
    between = lambda v: np.isfinite(v) & (v > 625) & (v < 675)
    assert between(edge_rows).mean() > 0.08
    assert between(out[:, 4:12, cols]).mean() < 0.005  # plain wall: noise only
    assert between(out[:, 26:38, cols]).mean() < 0.005  # plate interior


def test_kinect_noise_grows_with_depth_squared_and_depth_is_disparity_quantized():
    b = 16
    stds = []
    for z0 in (500.0, 1000.0):
        scene = np.full((b, SIZE, SIZE), z0, np.float32)
        out = H.kinect_sensor(scene, np.full(b, 128.0), np.random.default_rng(2))
        ok = np.isfinite(out)
        assert ok.mean() > 0.95
        stds.append(np.std(out[ok] - z0))
        disparity = H.SENSOR_F_PX * H.KINECT_BASELINE_MM / out[ok].astype(np.float64) / H.KINECT_DISPARITY_STEP_PX
        np.testing.assert_allclose(disparity, np.rint(disparity), atol=1e-2)
    assert stds[0] > 1.0
    assert 2.5 < stds[1] / stds[0] < 6.0  # (1000/500)^2 = 4


def test_simulate_to_file_streams_the_same_data(tmp_path):
    fmt = pytest.importorskip("simgan.data.format")
    path = tmp_path / "real.h5"
    H.simulate_hands_to_file(path, 20, seed=4, domain="real", size=32, workers=1, chunk=8, progress=False)
    got = fmt.read_arrays(path)
    want = H.render_hands(20, seed=4, domain="real", size=32, workers=1, chunk=8)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    with fmt.open_dataset(path) as ds:
        attrs = {k: ds.attrs[k] for k in ("task", "domain", "source", "generator_version", "seed")}
    assert attrs == {
        "task": "hand",
        "domain": "real",
        "source": "embedded-hands",
        "generator_version": H.GENERATOR_VERSION,
        "seed": 4,
    }


def test_min_max_3x3_is_the_scipy_filter_exactly():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    z = rng.uniform(300, 900, (3, 20, 17)).astype(np.float32)
    z[0, :, :5] = 2500.0  # a flat far region and an edge
    zmin, zmax = H._min_max_3x3(z)
    np.testing.assert_array_equal(zmin, ndimage.minimum_filter(z, size=(1, 3, 3), mode="nearest"))
    np.testing.assert_array_equal(zmax, ndimage.maximum_filter(z, size=(1, 3, 3), mode="nearest"))
