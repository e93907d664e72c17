import numpy as np
import pytest

from simgan.data.format import open_dataset
from simgan.io import SimganError
from simgan.sim import eyes


def high_contrast(params, iris_grey):
    """White everything, black pupil (and iris if iris_grey == 0), lids opened past the image."""
    p = dict(params)
    n = len(p["gaze_pitch"])
    one, zero = np.ones(n), np.zeros(n)
    p.update(
        skin=one,
        sclera=one,
        caruncle=one,
        ambient=one,
        iris=one * iris_grey,
        pupil=zero,
        skin_ramp=zero,
        socket_shade=zero,
        margin_dark=zero,
        crease_dark=zero,
        iris_texture=zero,
        limbus_dark=zero,
        upper_lid=40 * one,
        lower_lid=40 * one,
        half_width=60 * one,
    )
    return p


def dark_moments(images):
    """Darkness-weighted centroid (x, y) and covariance (xx, xy, yy) per image."""
    w = 1.0 - images.astype(np.float64) / 255.0
    yy, xx = np.mgrid[: images.shape[1], : images.shape[2]]
    s = w.sum((1, 2))
    cx, cy = (w * xx).sum((1, 2)) / s, (w * yy).sum((1, 2)) / s
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    cov = np.stack([(w * dx * dx).sum((1, 2)), (w * dx * dy).sum((1, 2)), (w * dy * dy).sum((1, 2))], 1) / s[:, None]
    return cx, cy, cov


@pytest.fixture(scope="module")
def params():
    return eyes.sample_eye_params(48, np.random.default_rng(7), "synthetic")


def test_gaze_convention_roundtrip():
    pitch, yaw = np.array([10.0, -20.0, 0.0]), np.array([-5.0, 25.0, 0.0])
    g = eyes.gaze_vector(pitch, yaw)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(g[2], [0, 0, -1], atol=1e-7)  # looking at the camera
    np.testing.assert_allclose(eyes.gaze_angles(g), np.stack([pitch, yaw], 1), atol=1e-4)


def test_rendered_pupil_matches_label(params):
    p = high_contrast(params, iris_grey=1.0)
    images = eyes.render_eye_batch(p, np.random.default_rng(0), "synthetic", supersample=2)
    labels = eyes.eye_labels(p)
    cx, cy, _ = dark_moments(images)
    err = np.hypot(cx - labels["pupil"][:, 0], cy - labels["pupil"][:, 1])
    assert err.max() < 1.0, err.max()


def test_iris_axis_ratio_follows_gaze_angle(params):
    p = high_contrast(params, iris_grey=0.0)
    images = eyes.render_eye_batch(p, np.random.default_rng(0), "synthetic", supersample=2)
    _, _, cov = dark_moments(images)
    mats = np.stack([np.stack([cov[:, 0], cov[:, 1]], 1), np.stack([cov[:, 1], cov[:, 2]], 1)], 1)
    ev = np.linalg.eigvalsh(mats)
    ratio = np.sqrt(ev[:, 0] / ev[:, 1])
    cos_angle = -eyes.eye_labels(p)["gaze"][:, 2]
    assert cos_angle.min() < 0.85  # the sample includes strongly turned eyes
    np.testing.assert_allclose(ratio, cos_angle, atol=0.02)


def _with_pose(params, pitch, yaw):
    p = {k: v[:1].repeat(2) for k, v in params.items()}
    p["gaze_pitch"], p["gaze_yaw"] = np.asarray(pitch, float), np.asarray(yaw, float)
    return p


def test_pupil_moves_with_yaw_and_pitch_signs(params):
    # yaw > 0 -> pupil to the image left; pitch > 0 (looking up) -> pupil up (smaller row).
    for pitch, yaw, axis, sign in (([0, 0], [20, -20], 0, -1), ([15, -15], [0, 0], 1, -1)):
        p = high_contrast(_with_pose(params, pitch, yaw), 1.0)
        labels = eyes.eye_labels(p)["pupil"]
        cx, cy, _ = dark_moments(eyes.render_eye_batch(p, np.random.default_rng(0)))
        rendered = (cx, cy)[axis]
        assert sign * (labels[0, axis] - labels[1, axis]) > 5
        assert sign * (rendered[0] - rendered[1]) > 5


def test_upper_lid_lowers_when_looking_down(params):
    p = _with_pose(params, [-20, 15], [0, 0])
    marks = eyes.eye_labels(p)["landmarks"]
    middle_upper = eyes.N_UPPER // 2
    assert marks.shape == (2, eyes.N_LANDMARKS, 2)
    assert marks[0, middle_upper, 1] > marks[1, middle_upper, 1] + 2  # lower in the image = larger row


def test_render_eyes_determinism_and_shapes():
    a = eyes.render_eyes(40, seed=3, domain="real", workers=1, chunk=16)
    b = eyes.render_eyes(40, seed=3, domain="real", workers=2, chunk=16)
    assert a["images"].shape == (40, 35, 55) and a["images"].dtype == np.uint8
    assert a["landmarks"].shape == (40, eyes.N_LANDMARKS, 2)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    c = eyes.render_eyes(40, seed=4, domain="real", workers=1, chunk=16)
    assert c["images"].tobytes() != a["images"].tobytes()


def test_gaze_distributions_differ_as_documented():
    rng = np.random.default_rng(0)
    n = 20000
    stats = {}
    for domain in eyes.DOMAINS:
        angles = eyes.gaze_angles(eyes.eye_labels(eyes.sample_eye_params(n, rng, domain))["gaze"])
        stats[domain] = (angles.mean(0), angles.std(0), angles.min(0), angles.max(0))
    mean, std, lo, hi = stats["synthetic"]
    np.testing.assert_allclose(mean, [0, 0], atol=0.5)
    np.testing.assert_allclose(std, [50 / 12**0.5, 60 / 12**0.5], rtol=0.03)
    r_mean, r_std, r_lo, r_hi = stats["real"]
    np.testing.assert_allclose(r_mean, [-8, 5], atol=0.3)
    np.testing.assert_allclose(r_std, [7, 9], rtol=0.05)
    assert (r_lo >= lo - 0.5).all() and (r_hi <= hi + 0.5).all()  # inside the synthetic range


def test_real_domain_differs_in_appearance_not_label_process():
    rng = np.random.default_rng(1)
    real_params = eyes.sample_eye_params(64, rng, "real")
    synth = eyes.render_eye_batch(real_params, np.random.default_rng(2), "synthetic")
    real = eyes.render_eye_batch(real_params, np.random.default_rng(2), "real")

    def hf_energy(images):
        x = images.astype(np.float64)
        lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
        return np.abs(lap).mean()

    assert hf_energy(real) > 1.5 * hf_energy(synth), (hf_energy(real), hf_energy(synth))
    # Histogram equalization: real images span the full range, clean renders do not.
    assert np.median(real.max((1, 2)).astype(int) - real.min((1, 2))) >= 250
    assert np.median(synth.max((1, 2)).astype(int) - synth.min((1, 2))) < 250
    # Labels come from geometry only: the real-only appearance parameters do not touch them.
    geometry_only = {k: v for k, v in real_params.items() if k not in eyes._REAL_RANGES}
    for k, v in eyes.eye_labels(real_params).items():
        assert v.tobytes() == eyes.eye_labels(geometry_only)[k].tobytes()


def test_simulate_to_file_streams_and_validates(tmp_path):
    path = tmp_path / "eyes.h5"
    eyes.simulate_eyes_to_file(path, 50, seed=5, domain="synthetic", workers=1, chunk=16, progress=False)
    expected = eyes.render_eyes(50, seed=5, workers=1, chunk=16)
    with open_dataset(path) as ds:
        assert (ds.task, ds.domain, ds.attrs["source"], ds.attrs["seed"]) == ("gaze", "synthetic", "embedded-eyes", 5)
        for k, v in expected.items():
            assert ds[k].tobytes() == v.tobytes(), k


def test_bad_parameters_are_named():
    with pytest.raises(SimganError, match="'domain'.*'refined'"):
        eyes.render_eyes(4, 0, domain="refined")
    with pytest.raises(SimganError, match="'n'"):
        eyes.render_eyes(0, 0)
    with pytest.raises(SimganError, match="'supersample'"):
        eyes.render_eyes(4, 0, supersample=0)


def test_jpeg_round_trip_is_the_pillow_one_byte_for_byte():
    """The embedded data's JPEG step moved from Pillow to OpenCV only because the two give the same
    pixels; a wheel that changes that would change every downstream number."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, eyes.HEIGHT, eyes.WIDTH), dtype=np.uint8)
    quality = np.array([50, 61, 70, 77, 85, 90])
    want = []
    for im, q in zip(images, quality):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=int(q))
        want.append(np.asarray(Image.open(buf).convert("L")))
    np.testing.assert_array_equal(eyes._jpeg(images, quality), np.stack(want))
