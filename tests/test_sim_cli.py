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
    with open_dataset(out) as ds:
        assert (ds.task, ds.domain, ds.n, ds.attrs["seed"]) == ("gaze", "real", 20, 2)
    assert run("show", out, "--out", png, "--n", 6, "--seed", 1) == 0
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


def test_simulate_hands_and_show(tmp_path):
    hands = pytest.importorskip("simgan.sim.hands")
    out, png = tmp_path / "hands.h5", tmp_path / "hands.png"
    assert (
        run("simulate", "hands", "--n", 6, "--seed", 0, "--size", 32, "--out", out, "--workers", 1, "--no-progress")
        == 0
    )
    with open_dataset(out) as ds:
        assert (ds.task, ds.n, ds["depth"].shape) == ("hand", 6, (6, 32, 32))
    assert len(hands.HAND_SKELETON) > 0
    assert run("show", out, "--out", png, "--n", 4) == 0
    assert png.stat().st_size > 1000
