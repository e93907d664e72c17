"""UnityEyes, MPIIGaze and Kaggle importers against fixtures written in each exact source format."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from simgan.data.format import open_dataset
from simgan.data.importers import crop_resize, map_points, pitchyaw, unity_look_to_mpii
from simgan.data.importers.kaggle import import_kaggle
from simgan.data.importers.mpiigaze import MPIIGazeConfig, fit_box, head_pose_deg, import_mpiigaze
from simgan.data.importers.unityeyes import UnityEyesConfig, import_unityeyes
from simgan.io import SimganError

W, H = 200, 150  # render size (real UnityEyes renders are larger; the code does not care)


def _fmt(x, y, z=0.0):
    return f"({x:.4f}, {y:.4f}, {z:.4f})"


def _render(
    folder,
    idx,
    cx=100.0,
    cy_up=80.0,
    eye_w=40.0,
    look="(0.5, 0.3, -0.812, 0.0)",
    head="(351.0, 182.0, 0.0)",
    blob=(0.0, 0.0),
):
    """One UnityEyes render: coordinates in screen space with y up; a white iris disc on black."""
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    margin = [_fmt(cx + eye_w / 2 * math.cos(a), cy_up + eye_w / 4 * math.sin(a)) for a in t]
    caruncle = [_fmt(cx - eye_w / 2 + 2 + k, cy_up) for k in range(7)]
    ix, iy = cx + blob[0], cy_up + blob[1]
    t32 = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    iris = [_fmt(ix + 6 * math.cos(a), iy + 6 * math.sin(a)) for a in t32]
    meta = {
        "interior_margin_2d": margin,
        "caruncle_2d": caruncle,
        "iris_2d": iris,
        "eye_details": {"look_vec": look, "pupil_size": "0.05", "iris_size": "0.9", "iris_texture": "eyeball_brown"},
        "head_pose": head,
        "lighting_details": {"skybox_exposure": "1.0"},
        "eye_region_details": {"pca_shape_coeffs": []},
    }
    (folder / f"{idx}.json").write_text(json.dumps(meta))
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.where((xx - ix) ** 2 + (yy - (H - iy)) ** 2 <= 36, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([img] * 3, -1)).save(folder / f"{idx}.jpg", quality=98)


def test_unity_gaze_convention_known_vector():
    g = unity_look_to_mpii(np.array([[0.5, 0.3, -0.812, 0.0]]), "t")[0]
    n = math.sqrt(0.25 + 0.09 + 0.812**2)
    np.testing.assert_allclose(g, [-0.5 / n, 0.3 / n, -0.812 / n], rtol=1e-6)
    pitch, yaw = pitchyaw(g)
    assert pitch == pytest.approx(math.asin(-0.3 / n)) and yaw == pytest.approx(math.atan2(0.5, 0.812))
    # Looking straight at the camera is pitch = yaw = 0 in both conventions.
    assert np.allclose(pitchyaw(unity_look_to_mpii(np.array([[0, 0, -1.0]]), "t")), 0)


def test_crop_and_points_agree():
    img = np.zeros((40, 60), np.uint8)
    img[10, 20] = 255
    box = (5, 2, 45, 32)  # 40x30 -> 20x15: exactly half
    out = crop_resize(img, box, (15, 20))
    p = map_points(np.array([[20.0, 10.0]]), box, (15, 20))[0]
    assert tuple(np.argwhere(out == out.max())[0]) == (int(p[1] + 0.5), int(p[0] + 0.5))
    # Out-of-frame parts are filled, not wrapped.
    assert crop_resize(img, (-10, -10, 10, 10), (20, 20), fill=7)[0, 0] == 7


def test_unityeyes_import(tmp_path):
    src = tmp_path / "ue"
    src.mkdir()
    for i in range(1, 13):  # natural order: 2 before 10
        _render(src, i, blob=((i % 5) - 2.0, (i % 3) - 1.0))
    out = tmp_path / "ue.h5"
    assert import_unityeyes(src, out, UnityEyesConfig(workers=1, chunk=5)) == 12
    with open_dataset(out) as ds:
        assert (ds.task, ds.domain, ds.n, ds.attrs["source"]) == ("gaze", "synthetic", 12, "unityeyes")
        imgs, pupil, lm, gaze, head = ds["images"], ds["pupil"], ds["landmarks"], ds["gaze"], ds["head_pose"]
        assert ds.attrs["landmark_layout"] == "interior_margin_2d:0-15,caruncle_2d:16-22,iris_2d:23-54"
    assert imgs.shape == (12, 35, 55) and lm.shape == (12, 55, 2)
    np.testing.assert_allclose(head[0], [-9.0, -178.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(gaze[0], unity_look_to_mpii(np.array([0.5, 0.3, -0.812]), "t"), atol=1e-6)
    # The pupil label sits on the white disc of the image (the crop and the y flip agree).
    for k in range(12):
        yy, xx = np.mgrid[0:35, 0:55]
        wgt = imgs[k].astype(float) * (imgs[k] > 60)
        centroid = np.array([(wgt * xx).sum(), (wgt * yy).sum()]) / wgt.sum()
        assert np.abs(centroid - pupil[k]).max() < 0.35, (k, centroid, pupil[k])
    # Crop is 2.5 eye widths: the margin spans 55 / 2.5 = 22 px of the 55-px-wide crop.
    span = lm[0, :16, 0].max() - lm[0, :16, 0].min()
    assert span == pytest.approx(22.0, abs=0.3)


def test_unityeyes_accepts_its_own_output_folder(tmp_path, capsys):
    """UnityEyes writes its renders to imgs/ below its output folder: either folder imports, to
    the same bytes; a folder with neither says where it looked."""
    from simgan.cli import main

    app = tmp_path / "UnityEyes_Windows"
    (app / "imgs").mkdir(parents=True)
    for i in range(1, 4):
        _render(app / "imgs", i)
    (app / "UnityEyes.exe").write_bytes(b"not a render")
    for src, out in ((app, tmp_path / "a.h5"), (app / "imgs", tmp_path / "b.h5")):
        assert main(["import", "unityeyes", str(src), "--out", str(out), "--workers", "1"]) == 0
        assert "wrote 3 rows" in capsys.readouterr().out
    with open_dataset(tmp_path / "a.h5") as a, open_dataset(tmp_path / "b.h5") as b:
        assert a.n == 3 and all(np.array_equal(a[k], b[k]) for k in a.keys())
    (tmp_path / "empty").mkdir()
    assert main(["import", "unityeyes", str(tmp_path / "empty"), "--out", str(tmp_path / "c.h5")]) == 2
    assert "no UnityEyes *.json files found; expected N.jpg + N.json here or in imgs/" in capsys.readouterr().err


def test_unityeyes_filter_resample_and_bad_inputs(tmp_path):
    src = tmp_path / "ue"
    src.mkdir()
    looks = [(0.1 * k - 0.3, 0.05 * (k % 4), -1.0) for k in range(10)]
    for i, lv in enumerate(looks):
        _render(src, i, look=f"({lv[0]}, {lv[1]}, {lv[2]}, 0)", head=f"({20.0 * i}, 0.0, 0.0)")
    n = import_unityeyes(src, tmp_path / "f.h5", UnityEyesConfig(head_pitch=(-30, 45), workers=1))
    assert n == 3  # pitches 0, 20, 40 of 0..180 (180 wraps to -180)
    cfg = UnityEyesConfig(resample="uniform", resample_n=40, bins=3, seed=7, workers=1)
    import_unityeyes(src, tmp_path / "r1.h5", cfg)
    import_unityeyes(src, tmp_path / "r2.h5", cfg)
    a, b = open_dataset(tmp_path / "r1.h5"), open_dataset(tmp_path / "r2.h5")
    assert a.n == 40 and a.attrs["seed"] == 7 and np.array_equal(a["gaze"], b["gaze"])
    a.close(), b.close()
    # Match a target histogram: only the 3 leftmost-looking renders in the target -> only those drawn.
    import_unityeyes(src, tmp_path / "t.h5", UnityEyesConfig(workers=1, limit=10))
    with open_dataset(tmp_path / "t.h5") as t:
        from simgan.data.format import write_dataset

        write_dataset(
            tmp_path / "target.h5",
            {"images": t["images"][:3], "gaze": t["gaze"][:3]},
            {"task": "gaze", "domain": "real", "source": "test"},
        )
    import_unityeyes(src, tmp_path / "m.h5", UnityEyesConfig(resample=str(tmp_path / "target.h5"), bins=10, workers=1))
    with open_dataset(tmp_path / "m.h5") as m, open_dataset(tmp_path / "t.h5") as t:
        assert {tuple(g) for g in m["gaze"]} <= {tuple(g) for g in t["gaze"][:3]}

    (src / "3.jpg").write_bytes((src / "3.jpg").read_bytes()[:200])  # truncated JPEG
    with pytest.raises(SimganError, match=r"3\.jpg: cannot decode"):
        import_unityeyes(src, tmp_path / "bad.h5", UnityEyesConfig(workers=1))
    assert not (tmp_path / "bad.h5").exists()
    report = tmp_path / "report.txt"
    n = import_unityeyes(src, tmp_path / "skip.h5", UnityEyesConfig(workers=1, skip_bad=True, report=report))
    assert n == 9 and "3.jpg" in report.read_text()
    meta = json.loads((src / "4.json").read_text())
    del meta["eye_details"]["look_vec"]
    (src / "4.json").write_text(json.dumps(meta))
    with pytest.raises(SimganError, match=r"4\.json: key 'eye_details.look_vec' missing"):
        import_unityeyes(src, tmp_path / "bad.h5", UnityEyesConfig(workers=1, skip_bad=False))


# ----------------------------------------------------------------------------------- MPIIGaze


def _side(rng, n, base):
    img = rng.integers(0, 256, (n, 36, 60), dtype=np.uint8)
    img[:, :, :10] = base  # a marker stripe on the left edge, to see mirroring
    g = rng.normal(size=(n, 3)) * [0.2, 0.2, 0.1] + [0, 0, -1]
    return {"image": img, "gaze": g / np.linalg.norm(g, axis=1, keepdims=True), "pose": rng.normal(size=(n, 3)) * 0.1}


def _mpii(root, persons=("p00", "p01"), days=("day01", "day02"), n=5):
    rng = np.random.default_rng(0)
    truth = {}
    for p in persons:
        (root / "Data/Normalized" / p).mkdir(parents=True)
        for d in days:
            left, right = _side(rng, n, 11), _side(rng, n, 222)
            names = np.array([f"{k:04d}.jpg" for k in range(1, n + 1)], dtype=object)
            scipy.io.savemat(
                root / "Data/Normalized" / p / f"{d}.mat", {"data": {"left": left, "right": right}, "filenames": names}
            )
            truth[(p, d)] = (left, right)
    ev = root / "Evaluation Subset" / "sample list for eye image"
    ev.mkdir(parents=True)
    for p in persons:
        (ev / f"{p}.txt").write_text("day01/0002.jpg left\nday02/0005.jpg right\n\n")
    return truth


def test_mpiigaze_import_mirroring_and_subsets(tmp_path):
    root = tmp_path / "MPIIGaze"
    truth = _mpii(root)
    out = tmp_path / "all.h5"
    assert import_mpiigaze(root, out, MPIIGazeConfig(workers=1)) == 2 * 2 * 2 * 5
    with open_dataset(out) as ds:
        imgs, gaze, eye, person = ds["images"], ds["gaze"], ds["labels/eye"], ds["labels/person"]
        head, units = ds["head_pose"], ds.label_columns()
    assert ds.domain == "real" and units["eye"][1] == "0=left,1=right"
    left, right = truth[("p00", "day01")]
    box = fit_box("crop")
    np.testing.assert_array_equal(imgs[0], crop_resize(left["image"][0], box, (35, 55)))
    # Right eye: flipped image, x of gaze negated -> yaw negated, pitch kept.
    np.testing.assert_array_equal(imgs[5], crop_resize(np.ascontiguousarray(right["image"][0][:, ::-1]), box, (35, 55)))
    assert imgs[5][:, -3:].mean() > 200 and imgs[0][:, :3].mean() < 20
    p0, y0 = pitchyaw(right["gaze"][0])
    p1, y1 = pitchyaw(gaze[5])
    assert p1 == pytest.approx(p0, abs=1e-6) and y1 == pytest.approx(-y0, abs=1e-6)
    hp = head_pose_deg(right["pose"][0], mirror=False)[0]
    np.testing.assert_allclose(head[5], hp * [1, -1, -1], atol=1e-4)
    assert list(eye[:10]) == [0] * 5 + [1] * 5 and person.max() == 1

    ev = tmp_path / "eval.h5"
    assert import_mpiigaze(root, ev, MPIIGazeConfig(subset="eval", persons=["p01"], workers=1)) == 2
    with open_dataset(ev) as ds:
        np.testing.assert_array_equal(
            ds["images"][0], crop_resize(truth[("p01", "day01")][0]["image"][1], box, (35, 55))
        )
        assert list(ds["labels/eye"]) == [0, 1] and set(ds["labels/person"]) == {1}
    assert import_mpiigaze(root, tmp_path / "rest.h5", MPIIGazeConfig(subset="rest", workers=2)) == 40 - 4
    assert (
        import_mpiigaze(root, tmp_path / "u.h5", MPIIGazeConfig(labels=False, eyes="left", fit="resize", workers=1))
        == 20
    )
    with open_dataset(tmp_path / "u.h5", require_labels=False) as ds:
        assert ds.keys() == ["images"]

    with pytest.raises(SimganError, match=r"--persons: \['p07'\]"):
        import_mpiigaze(root, tmp_path / "x.h5", MPIIGazeConfig(persons=["p07"]))
    (root / "Evaluation Subset/sample list for eye image/p00.txt").write_text("day01/0099.jpg left\n")
    with pytest.raises(SimganError, match=r"day01/0099.jpg left"):
        import_mpiigaze(root, tmp_path / "x.h5", MPIIGazeConfig(subset="eval", persons=["p00"], workers=1))
    (root / "Data/Normalized/p01/day02.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(SimganError, match=r"p01/day02\.mat: cannot read"):
        import_mpiigaze(root, tmp_path / "x.h5", MPIIGazeConfig(workers=1))
    assert not (tmp_path / "x.h5").exists()


# ----------------------------------------------------------------------------------- Kaggle


def test_kaggle_import(tmp_path):
    n = 12
    look = np.array([[0.01 * k, 0.2, -0.9, 0.0] for k in range(n)])
    with h5py.File(tmp_path / "gaze.h5", "w") as f:
        g = f.create_group("image")
        for k in np.random.default_rng(0).permutation(n):  # creation order must not matter
            g.create_dataset(str(k), data=np.full((35, 55), k, np.uint8))
        f["look_vec"] = look
        f["path"] = np.array([f"imgs/{k}.jpg".encode() for k in range(n)])
    assert import_kaggle(tmp_path / "gaze.h5", tmp_path / "s.h5") == n
    with open_dataset(tmp_path / "s.h5") as ds:
        assert ds.domain == "synthetic"
        assert [int(im[0, 0]) for im in ds["images"]] == list(range(n))  # "10" after "9"
        np.testing.assert_allclose(ds["gaze"], unity_look_to_mpii(look, "t"), atol=1e-7)
    with h5py.File(tmp_path / "real_gaze.h5", "w") as f:
        g = f.create_group("image")
        for k in range(3):
            g.create_dataset(f"{k:05d}", data=np.full((35, 55), k, np.uint8))
    assert import_kaggle(tmp_path / "real_gaze.h5", tmp_path / "r.h5") == 3
    with open_dataset(tmp_path / "r.h5", require_labels=False) as ds:
        assert ds.domain == "real" and ds.keys() == ["images"]
    with pytest.raises(SimganError, match="look_vec' missing"):
        import_kaggle(tmp_path / "real_gaze.h5", tmp_path / "x.h5", domain="synthetic")
    with h5py.File(tmp_path / "real_gaze.h5", "a") as f:
        f["image"].create_dataset("00009", data=np.zeros((36, 60), np.uint8))
    with pytest.raises(SimganError, match=r"real_gaze\.h5: key 'image/00009': expected uint8 \(35, 55\)"):
        import_kaggle(tmp_path / "real_gaze.h5", tmp_path / "x.h5")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["image"] = np.zeros((2, 35, 55), np.uint8)
    with pytest.raises(SimganError, match=r"flat\.h5: key 'image': a dataset"):
        import_kaggle(tmp_path / "flat.h5", tmp_path / "x.h5")
    (tmp_path / "trunc.h5").write_bytes((tmp_path / "gaze.h5").read_bytes()[:1000])
    with pytest.raises(SimganError, match=r"trunc\.h5: not a readable HDF5"):
        import_kaggle(tmp_path / "trunc.h5", tmp_path / "x.h5")


def test_cli_gaze_importers(tmp_path, capsys):
    from simgan.cli import main

    (tmp_path / "ue").mkdir()
    for i in range(4):
        _render(tmp_path / "ue", i, head=f"({350 + 5 * i}, 0, 0)")
    rc = main(
        [
            "import",
            "unityeyes",
            str(tmp_path / "ue"),
            "--out",
            str(tmp_path / "u.h5"),
            "--head-pitch=-12,2",
            "--resample",
            "uniform",
            "--resample-n",
            "5",
            "--seed",
            "3",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and "wrote 5 rows" in capsys.readouterr().out
    with open_dataset(tmp_path / "u.h5") as ds:
        assert set(np.round(ds["head_pose"][:, 0])) <= {-10.0, -5.0, 0.0} and ds.attrs["seed"] == 3
    _mpii(tmp_path / "MPIIGaze")
    rc = main(
        [
            "import",
            "mpiigaze",
            str(tmp_path / "MPIIGaze"),
            "--out",
            str(tmp_path / "m.h5"),
            "--subset",
            "eval",
            "--persons",
            "p00",
            "--no-mirror",
            "--fit",
            "resize",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and "wrote 2 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse rejects a malformed person list before any work
        main(["import", "mpiigaze", str(tmp_path / "MPIIGaze"), "--out", str(tmp_path / "m.h5"), "--persons", "x1"])
    assert "like p00,p01" in capsys.readouterr().err
    rc = main(["import", "kaggle", str(tmp_path / "none.h5"), "--out", str(tmp_path / "k.h5")])
    assert rc == 2 and "none.h5: file not found" in capsys.readouterr().err
