import numpy as np
import pytest
from PIL import Image

from simgan.cli import main
from simgan.data.format import open_dataset, write_dataset


def run(*argv):
    return main([str(a) for a in argv])


def test_simulate_eyes_and_show(tmp_path, capsys):
    out, png = tmp_path / "eyes.h5", tmp_path / "grid.png"
    assert (
        run(
            "simulate",
            "eyes",
            "--domain",
            "real",
            "--n",
            20,
            "--seed",
            2,
            "--out",
            out,
            "--workers",
            1,
            "--chunk",
            8,
            "--no-progress",
        )
        == 0
    )
    assert capsys.readouterr().out == f"wrote 20 real eye images (35x55) to {out}\n"
    with open_dataset(out) as ds:
        assert (ds.task, ds.domain, ds.n, ds.attrs["seed"]) == ("gaze", "real", 20, 2)
    assert run("show", out, "--out", png, "--n", 6, "--seed", 1) == 0
    assert capsys.readouterr().out == f"wrote a grid of 6 of the 20 rows of {out} to {png}\n"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    # The gaze arrows are drawn in pure-ish red, which grey eye images never contain.
    reddish = (pixels[:, 0] > 200) & (pixels[:, 1] < 80) & (pixels[:, 2] < 80)
    assert reddish.sum() > 20


def test_show_unlabeled_file(tmp_path):
    path, png = tmp_path / "real.h5", tmp_path / "r.png"
    images = np.random.default_rng(0).integers(0, 256, (5, 35, 55), dtype=np.uint8)
    attrs = {"task": "gaze", "domain": "real", "source": "test", "generator_version": "t", "seed": -1}
    write_dataset(path, {"images": images}, attrs, require_labels=False)
    assert run("show", path, "--out", png, "--n", 16) == 0
    assert png.stat().st_size > 1000


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert run("simulate", "eyes", "--n", 0, "--seed", 1, "--out", tmp_path / "x.h5") == 2
    assert "'--n'" in capsys.readouterr().err
    assert run("simulate", "eyes", "--n", 4, "--seed", 1, "--size", 32, "--out", tmp_path / "x.h5") == 2
    assert "'--size'" in capsys.readouterr().err
    assert run("show", tmp_path / "missing.h5", "--out", tmp_path / "g.png") == 2
    err = capsys.readouterr().err
    assert "missing.h5" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "g.png").exists()


def test_simulate_hands_and_show(tmp_path, capsys):
    hands = pytest.importorskip("simgan.sim.hands")
    out, png = tmp_path / "hands.h5", tmp_path / "hands.png"
    assert (
        run("simulate", "hands", "--n", 6, "--seed", 0, "--size", 32, "--out", out, "--workers", 1, "--no-progress")
        == 0
    )
    assert capsys.readouterr().out == f"wrote 6 synthetic hand depth maps (32x32) to {out}\n"
    with open_dataset(out) as ds:
        assert (ds.task, ds.n, ds["depth"].shape) == ("hand", 6, (6, 32, 32))
    assert len(hands.HAND_SKELETON) > 0
    assert run("show", out, "--out", png, "--n", 4) == 0
    assert png.stat().st_size > 1000


def test_show_draws_file_names_and_generic_labels(tmp_path, capsys):
    from simgan.sim.cli import panel_title

    images = np.random.default_rng(0).integers(0, 256, (3, 20, 30), dtype=np.uint8)
    attrs = {"task": "generic", "domain": "synthetic", "source": "folder"}
    labels = {"labels/x": np.array([1.5, 2.0, 3.25]), "labels/y": np.array([[1, 2], [3, 4], [5, 6]], np.int16)}
    files = np.array(["cam0/frame_0001.png", "cam0/frame_0002.png", "cam1/a_very_long_name_of_a_render_0003.png"])
    write_dataset(tmp_path / "plain.h5", {"images": images}, attrs, require_labels=False)
    write_dataset(tmp_path / "named.h5", {"images": images, "files": files, **labels}, attrs)
    for name in ("plain", "named"):
        assert run("show", tmp_path / f"{name}.h5", "--out", tmp_path / f"{name}.png", "--n", 3) == 0
        assert f"wrote a grid of 3 of the 3 rows of {tmp_path / name}.h5" in capsys.readouterr().out
    with Image.open(tmp_path / "plain.png") as a, Image.open(tmp_path / "named.png") as b:
        assert a.size == b.size and not np.array_equal(np.asarray(a), np.asarray(b))  # the names are drawn
    with open_dataset(tmp_path / "named.h5") as ds:
        rows = [ds.read(rows=slice(i, i + 1)) for i in range(3)]
    assert panel_title(rows[0], "#0", "generic") == "#0\ncam0/frame_0001.png\nx=1.5 y=1,2"
    assert (
        panel_title(rows[2], "#2", "generic").splitlines()[1] == "...name_of_a_render_0003.png"
    )  # the end tells files apart
    assert panel_title({"images": images[:1]}, "#0", "generic") == "#0"
