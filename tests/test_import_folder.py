"""Folder importer (issue 10), label export to Parquet, and the data CLI commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from simgan.cli import main
from simgan.data.export import export_labels
from simgan.data.format import open_dataset, write_dataset
from simgan.data.importers.folder import FolderConfig, import_folder, parse_units
from simgan.io import SimganError

CSV = """file,angle,count,tiny
img_10.png,0.1,3,1e-300
img_2.png,-123456789.123456789,-7,2.5e-05
sub/img_1.png,0.30000000000000004,0,5e-324
"""


def _images(root, color=False):
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    imgs = {}
    for name, (h, w) in (("img_10.png", (40, 80)), ("img_2.png", (70, 70)), ("sub/img_1.png", (35, 55))):
        a = rng.integers(0, 256, (h, w, 3) if color else (h, w), dtype=np.uint8)
        Image.fromarray(a).save(root / name)
        imgs[name] = a
    (root / "notes.txt").write_text("not an image, ignored")
    return imgs


def test_folder_labels_csv_byte_for_byte(tmp_path):
    imgs = _images(tmp_path / "imgs")
    (tmp_path / "labels.csv").write_text(CSV)
    cfg = FolderConfig(
        size=(35, 55), labels=tmp_path / "labels.csv", units=parse_units("angle=deg, count=1"), workers=1
    )
    assert import_folder(tmp_path / "imgs", tmp_path / "f.h5", cfg) == 3
    with open_dataset(tmp_path / "f.h5") as ds:
        assert (ds.task, ds.domain) == ("generic", "synthetic")
        cols = ds.label_columns()
        images = ds["images"]
    # Float columns are the doubles Python's float() reads from the CSV text, bit for bit.
    texts = [line.split(",") for line in CSV.strip().splitlines()[1:]]
    expect = np.array([float(t[1]) for t in texts])
    assert cols["angle"][0].tobytes() == expect.tobytes() and cols["angle"][1] == "deg"
    assert cols["tiny"][0].tobytes() == np.array([float(t[3]) for t in texts]).tobytes()
    assert cols["count"][0].dtype == np.int64 and list(cols["count"][0]) == [3, -7, 0] and cols["tiny"][1] == ""
    # Rows follow the table; an image already 35x55 is stored untouched; 40x80 is centre-cropped.
    np.testing.assert_array_equal(images[2], imgs["sub/img_1.png"])
    assert images.shape == (3, 35, 55)


def test_folder_parquet_colour_and_crop_modes(tmp_path):
    imgs = _images(tmp_path / "imgs", color=True)
    df = pd.DataFrame(
        {
            "file": ["sub/img_1.png", "img_2.png", "img_10.png"],
            "y": np.array([1.5, 2.25, -3.0], np.float32),
            "k": np.array([1, 2, 3], np.int8),
        }
    )
    df.to_parquet(tmp_path / "l.parquet")
    n = import_folder(
        tmp_path / "imgs",
        tmp_path / "c.h5",
        FolderConfig(size=(35, 55), color=True, crop="resize", labels=tmp_path / "l.parquet", workers=1),
    )
    assert n == 3
    with open_dataset(tmp_path / "c.h5") as ds:
        assert ds["images"].shape == (3, 35, 55, 3)
        np.testing.assert_array_equal(ds["images"][0], imgs["sub/img_1.png"])
        assert ds["labels/y"].dtype == np.float32 and ds["labels/y"].tobytes() == df["y"].to_numpy().tobytes()
        assert ds["labels/k"].dtype == np.int8
    with pytest.raises(SimganError, match=r"img_2\.png: expected 35x55 with --crop none, got 70x70"):
        import_folder(tmp_path / "imgs", tmp_path / "n.h5", FolderConfig(size=(35, 55), crop="none", workers=1))
    # Unlabeled: a real-side file in natural file order (img_2 before img_10), grayscale.
    assert import_folder(tmp_path / "imgs", tmp_path / "u.h5", FolderConfig(size=(20, 20), workers=1)) == 3
    with open_dataset(tmp_path / "u.h5", require_labels=False) as ds:
        assert ds.domain == "real" and ds.keys() == ["files", "images"] and ds["images"].shape == (3, 20, 20)
        assert list(ds.file_names()) == ["img_2.png", "img_10.png", "sub/img_1.png"]
    # 16-bit grayscale PNG scales to 8 bits.
    Image.fromarray(np.full((35, 55), 65535, np.uint16)).save(tmp_path / "imgs" / "deep.png")
    import_folder(tmp_path / "imgs", tmp_path / "d.h5", FolderConfig(size=(35, 55), workers=1))
    with open_dataset(tmp_path / "d.h5", require_labels=False) as ds:
        assert (ds["images"][0] == 255).all()


def test_folder_bad_images_and_label_mismatches(tmp_path):
    _images(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "imgs" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    report = tmp_path / "bad.txt"
    with pytest.raises(SimganError, match=r"2 bad images .*broken\.png: cannot decode.*--skip-bad"):
        import_folder(tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), report=report, workers=1))
    assert not (tmp_path / "x.h5").exists() and "cut.jpg" in report.read_text()
    n = import_folder(
        tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), skip_bad=True, report=report, workers=1)
    )
    assert n == 3 and report.read_text().startswith("skipped 2 bad")
    (tmp_path / "imgs" / "broken.png").unlink()
    (tmp_path / "imgs" / "cut.jpg").unlink()

    (tmp_path / "l.csv").write_text(CSV + "ghost.png,1,1,1\n")
    with pytest.raises(SimganError, match=r"labels for images not in .*'ghost\.png'"):
        import_folder(tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), labels=tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text("\n".join(CSV.splitlines()[:3]) + "\n")
    with pytest.raises(SimganError, match=r"images without a row in .*'sub/img_1\.png'"):
        import_folder(tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), labels=tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text(CSV.replace("0.1,3", "abc,3"))
    with pytest.raises(SimganError, match=r"l\.csv: column 'angle': expected numbers"):
        import_folder(tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), labels=tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text(CSV.replace("0.1,3", ",3"))
    with pytest.raises(SimganError, match=r"column 'angle': missing or non-finite value for file 'img_10\.png'"):
        import_folder(tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), labels=tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text(CSV.replace("file,", "name,"))
    with pytest.raises(SimganError, match=r"expected a 'file' column"):
        import_folder(tmp_path / "imgs", tmp_path / "x.h5", FolderConfig(size=(35, 55), labels=tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text(CSV)
    with pytest.raises(SimganError, match=r"--units: no label column named 'nope'"):
        import_folder(
            tmp_path / "imgs",
            tmp_path / "x.h5",
            FolderConfig(size=(35, 55), labels=tmp_path / "l.csv", units={"nope": "m"}),
        )


def test_export_gaze_and_hand_columns(tmp_path):
    n = 4
    g = np.array([[0, 0, -1], [0.6, 0, -0.8], [0, 0.6, -0.8], [0, 0, -1]], np.float32)
    write_dataset(
        tmp_path / "g.h5",
        {
            "images": np.zeros((n, 35, 55), np.uint8),
            "gaze": g,
            "pupil": np.ones((n, 2), np.float32),
            "head_pose": np.zeros((n, 3), np.float32),
            "landmarks": np.arange(n * 3 * 2, dtype=np.float32).reshape(n, 3, 2),
            "labels/person": np.arange(n, dtype=np.int16),
        },
        {"task": "gaze", "domain": "real", "source": "test"},
        units={"person": "id"},
    )
    assert export_labels(tmp_path / "g.h5", tmp_path / "g.parquet") == n
    df = pd.read_parquet(tmp_path / "g.parquet")
    assert list(df.columns) == [
        "index",
        "gaze_x",
        "gaze_y",
        "gaze_z",
        "pitch_deg",
        "yaw_deg",
        "pupil_x",
        "pupil_y",
        "head_pitch_deg",
        "head_yaw_deg",
        "head_roll_deg",
        "lm0_x",
        "lm0_y",
        "lm1_x",
        "lm1_y",
        "lm2_x",
        "lm2_y",
        "person",
    ]
    assert list(df["index"]) == [0, 1, 2, 3] and df["lm1_y"].iloc[2] == 15.0
    assert df["yaw_deg"].iloc[1] == pytest.approx(-36.8699, abs=1e-3)  # atan2(-0.6, 0.8)
    assert df["pitch_deg"].iloc[2] == pytest.approx(-36.8699, abs=1e-3)  # asin(-0.6)
    assert pq.read_schema(tmp_path / "g.parquet").field("person").metadata[b"unit"] == b"id"

    write_dataset(
        tmp_path / "h.h5",
        {
            "depth": np.ones((2, 8, 8), np.float32),
            "joints": np.arange(2 * 14 * 3, dtype=np.float32).reshape(2, 14, 3) / 100,
        },
        {"task": "hand", "domain": "synthetic", "source": "test"},
    )
    export_labels(tmp_path / "h.h5", tmp_path / "h.parquet")
    df = pd.read_parquet(tmp_path / "h.parquet")
    assert df.shape == (2, 1 + 42) and df["j13_d"].iloc[1] == pytest.approx(0.83)
    write_dataset(
        tmp_path / "u.h5",
        {"images": np.zeros((3, 4, 4), np.uint8)},
        {"task": "generic", "domain": "real", "source": "test"},
    )
    export_labels(tmp_path / "u.h5", tmp_path / "u.parquet")
    assert list(pd.read_parquet(tmp_path / "u.parquet").columns) == ["index"]


def test_cli_import_export_and_errors(tmp_path, capsys):
    _images(tmp_path / "imgs")
    (tmp_path / "labels.csv").write_text(CSV)
    rc = main(
        [
            "import",
            "folder",
            str(tmp_path / "imgs"),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--out",
            str(tmp_path / "f.h5"),
            "--size",
            "35x55",
            "--units",
            "angle=deg",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and "wrote 3 rows" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "f.h5"), "--out", str(tmp_path / "f.parquet")]) == 0
    df = pd.read_parquet(tmp_path / "f.parquet")
    assert list(df.columns) == ["index", "file", "angle", "count", "tiny"]
    assert list(df["file"]) == ["img_10.png", "img_2.png", "sub/img_1.png"]  # the table's rows, its names
    assert df["angle"].to_numpy().tobytes() == pd.read_csv(tmp_path / "labels.csv")["angle"].to_numpy().tobytes()
    rc = main(["import", "folder", str(tmp_path / "imgs"), "--out", str(tmp_path / "x.h5"), "--size", "35by55"])
    assert rc == 2 and "--size: expected HxW" in capsys.readouterr().err
    rc = main(["import", "nyu", str(tmp_path), "--split", "train"])
    assert rc == 2 and "--out-synthetic and/or --out-real" in capsys.readouterr().err
    rc = main(["download", "nope", "--dest", str(tmp_path)])
    assert rc == 2 and "unknown data set 'nope'" in capsys.readouterr().err
    rc = main(["export", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "m.parquet")])
    assert rc == 2 and "missing.h5: file not found" in capsys.readouterr().err


def _same_size_images(root, names, hw=(30, 40), color=False):
    rng = np.random.default_rng(5)
    out = {}
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 256, hw + ((3,) if color else ()), dtype=np.uint8)
        Image.fromarray(a).save(root / name)
        out[name] = a
    return out


def test_folder_size_inferred_when_all_images_agree(tmp_path, capsys):
    imgs = _same_size_images(tmp_path / "imgs", ["b.png", "a/c.png", "d.bmp"])
    assert main(["import", "folder", str(tmp_path / "imgs"), "--out", str(tmp_path / "f.h5"), "--workers", "1"]) == 0
    assert "wrote 3 rows" in capsys.readouterr().out
    with open_dataset(tmp_path / "f.h5", require_labels=False) as ds:
        names = list(ds.file_names())
        assert ds["images"].shape == (3, 30, 40) and names == ["a/c.png", "b.png", "d.bmp"]
        for name, image in zip(names, ds["images"]):  # stored as they are: no crop, no resize
            np.testing.assert_array_equal(image, imgs[name])
    # An EXIF rotation by 90 degrees turns a 30x40 file into a 40x30 image, which is what counts.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(imgs["b.png"]).save(tmp_path / "imgs" / "b.png", exif=exif)
    rc = main(["import", "folder", str(tmp_path / "imgs"), "--out", str(tmp_path / "g.h5"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "images differ in size ('a/c.png' is 30x40, 'b.png' is 40x30); pass --size HxW" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "g.h5").exists()
    # With --size the same folder imports.
    rc = main(
        [
            "import",
            "folder",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "g.h5"),
            "--size",
            "30x40",
            "--workers",
            "1",
        ]
    )
    assert rc == 0


def test_files_key_is_checked_and_survives_a_copy(tmp_path):
    from simgan.data.format import DatasetError, DatasetWriter, copy_labels

    attrs = {"task": "generic", "domain": "synthetic", "source": "test"}
    arrays = {"images": np.zeros((2, 4, 4), np.uint8), "files": np.array(["a/ü.png", "b.png"]), "labels/x": np.ones(2)}
    write_dataset(tmp_path / "a.h5", arrays, attrs)
    with open_dataset(tmp_path / "a.h5") as ds, DatasetWriter(tmp_path / "b.h5", ds.attrs) as w:
        w.append({"images": ds["images"]})
        copy_labels(ds, w)  # what refinement does with every non-image key
    with open_dataset(tmp_path / "b.h5") as ds:
        assert list(ds.file_names()) == ["a/ü.png", "b.png"]
    for bad, match in ((np.array(["a", ""]), "non-empty file name"), (np.arange(2), "UTF-8 strings")):
        with pytest.raises(DatasetError, match=match):
            write_dataset(tmp_path / "c.h5", {**arrays, "files": bad}, attrs)
    write_dataset(tmp_path / "u.h5", {"images": np.zeros((2, 4, 4), np.uint8)}, attrs)
    with open_dataset(tmp_path / "u.h5") as ds:
        assert ds.file_names() is None


def test_export_images_under_the_users_names(tmp_path, capsys):
    imgs = _same_size_images(tmp_path / "imgs", ["x/one.jpg", "two.png", "x/y/three.png"], color=True)
    (tmp_path / "labels.csv").write_text("file,u,v\nx/one.jpg,0.1,1\ntwo.png,-2.5e-300,2\nx/y/three.png,3,3\n")
    h5 = tmp_path / "f.h5"
    args = ["import", "folder", str(tmp_path / "imgs"), "--labels", str(tmp_path / "labels.csv"), "--color"]
    assert main([*args, "--out", str(h5), "--workers", "1"]) == 0
    out = tmp_path / "out" / "pngs"
    assert main(["export", str(h5), "--images", str(out)]) == 0
    assert f"wrote 3 images and labels.csv to {out}" in capsys.readouterr().out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["labels.csv", "two.png", "x/one.png", "x/y/three.png"]
    table = pd.read_csv(out / "labels.csv")
    assert list(table.columns) == ["file", "u", "v"] and list(table["file"]) == [
        "x/one.png",
        "two.png",
        "x/y/three.png",
    ]
    assert table["u"].to_numpy().tobytes() == np.array([0.1, -2.5e-300, 3.0]).tobytes()
    with open_dataset(h5) as ds:
        stored = ds["images"]
    for name, image in zip(table["file"], stored):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), image)
    np.testing.assert_array_equal(stored[1], imgs["two.png"])
    # The folder and its table import back as the same data set.
    assert (
        main(
            [
                "import",
                "folder",
                str(out),
                "--labels",
                str(out / "labels.csv"),
                "--color",
                "--out",
                str(tmp_path / "r.h5"),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    with open_dataset(tmp_path / "r.h5") as back, open_dataset(h5) as ds:
        assert np.array_equal(back["images"], ds["images"]) and back["labels/u"].tobytes() == ds["labels/u"].tobytes()
    capsys.readouterr()
    # A non-empty folder is refused before anything is written; --overwrite replaces it whole.
    (out / "mine.txt").write_text("keep?")
    parquet = tmp_path / "l.parquet"
    assert main(["export", str(h5), "--out", str(parquet), "--images", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--images {out}: the folder exists and is not empty; pass --overwrite" in err
    assert (out / "mine.txt").exists() and not parquet.exists()
    assert main(["export", str(h5), "--images", str(out), "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and (out / "x" / "y" / "three.png").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["pngs"]  # no temp or old folder left
    assert (
        main(["export", str(h5)]) == 2
        and "--out FILE.parquet (the labels) and/or --images DIR" in capsys.readouterr().err
    )


def test_export_images_without_names_and_of_hands(tmp_path):
    from simgan.data.export import export_images, png_names

    attrs = {"task": "generic", "domain": "refined", "source": "test"}
    write_dataset(tmp_path / "g.h5", {"images": np.arange(11 * 6, dtype=np.uint8).reshape(11, 2, 3)}, attrs)
    assert export_images(tmp_path / "g.h5", tmp_path / "g") == 11
    assert sorted(p.name for p in (tmp_path / "g").glob("*.png"))[:2] == ["00.png", "01.png"]
    assert list(pd.read_csv(tmp_path / "g" / "labels.csv")["file"])[-1] == "10.png"
    with Image.open(tmp_path / "g" / "10.png") as im:
        np.testing.assert_array_equal(np.asarray(im), np.arange(60, 66, dtype=np.uint8).reshape(2, 3))
    depth = np.ones((2, 8, 8), np.float32)
    depth[0, 0, 0] = -1.0
    write_dataset(
        tmp_path / "h.h5", {"depth": depth}, {"task": "hand", "domain": "real", "source": "t"}, require_labels=False
    )
    export_images(tmp_path / "h.h5", tmp_path / "h")
    with Image.open(tmp_path / "h" / "0.png") as im:  # 16-bit: -1 (near) -> 0, 1 (far) -> 65535
        a = np.asarray(im)
    assert a[0, 0] == 0 and a[0, 1] == 65535
    # Two names that would meet as PNGs keep their whole names; a name leaving the folder is refused.
    assert png_names(["a.jpg", "a.png", "b/c.tif"], 3, "f") == ["a.jpg.png", "a.png.png", "b/c.png"]
    with pytest.raises(SimganError, match=r"rows would share the PNG name 'a\.jpg\.png'"):
        png_names(["a.jpg", "a.png", "a.jpg.png"], 3, "f")
    with pytest.raises(SimganError, match=r"row 1: expected a relative file name inside the folder, got '\.\./x\.png'"):
        png_names(["ok.png", "../x.png"], 2, "f")
