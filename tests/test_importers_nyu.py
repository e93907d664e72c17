"""NYU hand importer against PNGs + joint_data.mat written in the data set's exact format."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from simgan import parallel
from simgan.data.format import open_dataset
from simgan.data.importers.nyu import EVAL_JOINTS, NYUConfig, decode_depth, encode_depth, import_nyu
from simgan.io import SimganError

H, W = 120, 160
X0, Y0, SIDE = 60, 40, 40  # hand square in the source frame


def _frame(k):
    """synthetic depth unique per pixel on the hand (so positions can be read back), 0 elsewhere;
    real = synthetic + offset, a hole, and clutter at hand depth just outside the hand."""
    yy, xx = np.mgrid[0:H, 0:W]
    hand = (xx >= X0 + k) & (xx < X0 + k + SIDE) & (yy >= Y0) & (yy < Y0 + SIDE)
    synth = np.where(hand, 600 + (xx - X0) + 41 * (yy - Y0), 0).astype(np.uint16)
    real = np.where(hand, synth + 7, 2500).astype(np.uint16)
    real[Y0 + 5, X0 + k + 5] = 0  # sensor hole on the hand
    real[Y0 : Y0 + SIDE, X0 + k - 4 : X0 + k] = 900  # clutter touching the hand (e.g. an arm)
    return synth, real


def _dataset(root, n=3, camera_shift=0):
    folder = root / "dataset" / "train"
    folder.mkdir(parents=True)
    uvd = np.zeros((3, n, 36, 3))
    rng = np.random.default_rng(1)
    for k in range(n):
        synth, real = _frame(k)
        for name, d in (("synthdepth", synth), ("depth", real)):
            Image.fromarray(encode_depth(d)).save(folder / f"{name}_1_{k + 1:07d}.png")
        u = rng.integers(X0 + k, X0 + k + SIDE, 36)
        v = rng.integers(Y0, Y0 + SIDE, 36)
        uvd[0, k] = np.stack([u, v, synth[v, u].astype(float)], 1)
        uvd[1:, k] = -1  # other cameras: must not be read
    scipy.io.savemat(
        folder / "joint_data.mat",
        {"joint_uvd": uvd, "joint_xyz": uvd * 0.5, "joint_names": np.array([f"j{i}" for i in range(36)], dtype=object)},
    )
    return folder, uvd[0]


def test_depth_png_roundtrip_exact(tmp_path):
    d = np.array([[0, 1, 255, 256], [700, 1234, 4095, 65535]], np.uint16)
    Image.fromarray(encode_depth(d)).save(tmp_path / "d.png")
    rgb = np.asarray(Image.open(tmp_path / "d.png"))
    assert rgb[1, 1, 1] == 1234 >> 8 and rgb[1, 1, 2] == 1234 & 255  # G high byte, B low byte
    np.testing.assert_array_equal(decode_depth(tmp_path / "d.png"), d.astype(np.float32))


def test_mask_crop_and_joint_positions_exact(tmp_path):
    folder, uvd = _dataset(tmp_path)
    # Box = 1.2 x 40 = 48 px and size 48: scale 1, so every check below is exact.
    cfg = NYUConfig(size=48, pad=0.1, half_range_mm=2000.0, workers=1)
    assert import_nyu(tmp_path, tmp_path / "s.h5", tmp_path / "r.h5", cfg) == 3
    with open_dataset(tmp_path / "s.h5") as s, open_dataset(tmp_path / "r.h5") as r:
        assert (s.domain, r.domain, s.task) == ("synthetic", "real", "hand")
        sd, sj, rd, mask = s["depth"], s["joints"], r["depth"], r["mask"]
        boxes, centres = s["labels/crop_box"], r["labels/d_centre_mm"]
        assert list(s["labels/frame"]) == [1, 2, 3] and np.array_equal(mask, s["mask"])
    assert sd.shape == (3, 48, 48) and sj.shape == (3, 14, 3)
    for k in range(3):
        synth, real = _frame(k)
        x0, y0, x1, y1 = boxes[k]
        assert (x1 - x0, y1 - y0) == (48, 48) and x0 == X0 + k - 4 and y0 == Y0 - 4
        # Mask crop keeps only hand pixels: the clutter next to the hand and the far wall are gone.
        hand = mask[k] == 1
        assert hand.sum() == SIDE * SIDE
        assert (rd[k][~hand] == 1.0).all() and (sd[k][~hand] == 1.0).all()
        assert rd[k][Y0 + 5 - y0, X0 + k + 5 - x0] == 1.0  # the hole reads as background
        centre_r = np.median(real[(synth > 0) & (real > 0)])
        assert centres[k] == centre_r
        np.testing.assert_allclose(rd[k][12, 14], (real[y0 + 12, x0 + 14] - centre_r) / 2000.0, rtol=1e-6)
        # Joints land on the crop pixels that hold their source pixels' depth.
        for j, idx in enumerate(EVAL_JOINTS):
            u, v, d = uvd[k, idx]
            cu, cv = sj[k, j, :2]
            assert (cu, cv) == (u - x0, v - y0)
            centre_s = np.median(synth[synth > 0])
            assert sd[k][int(cv), int(cu)] == pytest.approx((d - centre_s) / 2000.0, abs=1e-6)
            assert sj[k, j, 2] == pytest.approx((d - centre_s) / 2000.0, abs=1e-6)


def _no_init(threads=1):
    pass


def test_resized_parallel_and_deterministic(tmp_path, monkeypatch):
    # The worker initializer imports torch in each worker (seconds here); it does not affect the output.
    monkeypatch.setattr(parallel, "_set_threads", _no_init)
    _dataset(tmp_path, n=5)
    a = NYUConfig(size=24, workers=1, chunk=2)
    b = NYUConfig(size=24, workers=2, chunk=2)
    import_nyu(tmp_path, None, tmp_path / "a.h5", a)
    import_nyu(tmp_path, None, tmp_path / "b.h5", b)
    with open_dataset(tmp_path / "a.h5") as x, open_dataset(tmp_path / "b.h5") as y:
        assert np.array_equal(x["depth"], y["depth"]) and np.array_equal(x["joints"], y["joints"])
        depth, joints = x["depth"], x["joints"]
    assert depth.shape == (5, 24, 24) and depth.min() >= -1 and depth.max() == 1.0
    assert (joints[..., :2] >= 0).all() and (joints[..., :2] < 24).all()


def test_bad_frames(tmp_path):
    folder, _ = _dataset(tmp_path)
    (folder / "depth_1_0000002.png").unlink()
    with pytest.raises(SimganError, match=r"depth_1_0000002\.png: image file not found"):
        import_nyu(tmp_path, tmp_path / "s.h5", tmp_path / "r.h5", NYUConfig(workers=1))
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "r.h5").exists()
    report = tmp_path / "bad.txt"
    n = import_nyu(tmp_path, tmp_path / "s.h5", None, NYUConfig(workers=1, skip_bad=True, report=report))
    assert n == 2 and "frame 2" in report.read_text()
    data = (folder / "synthdepth_1_0000001.png").read_bytes()
    (folder / "synthdepth_1_0000001.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SimganError, match=r"synthdepth_1_0000001\.png: cannot decode"):
        import_nyu(tmp_path, tmp_path / "x.h5", None, NYUConfig(workers=1, limit=3))
    (folder / "joint_data.mat").write_bytes(b"junk")
    with pytest.raises(SimganError, match=r"joint_data\.mat: cannot read"):
        import_nyu(tmp_path, tmp_path / "x.h5", None, NYUConfig(workers=1))
    with pytest.raises(SimganError, match=r"expected NYU 'test/joint_data.mat'"):
        import_nyu(tmp_path, tmp_path / "x.h5", None, NYUConfig(split="test"))


def test_cli_nyu(tmp_path, capsys):
    from simgan.cli import main

    _dataset(tmp_path / "raw")
    rc = main(
        [
            "import",
            "nyu",
            str(tmp_path / "raw"),
            "--out-synthetic",
            str(tmp_path / "s.h5"),
            "--out-real",
            str(tmp_path / "r.h5"),
            "--size",
            "32",
            "--half-range-mm",
            "200",
            "--limit",
            "2",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and "wrote 2 rows" in capsys.readouterr().out
    with open_dataset(tmp_path / "r.h5") as ds:
        assert ds["depth"].shape == (2, 32, 32) and ds.attrs["half_range_mm"] == 200.0
