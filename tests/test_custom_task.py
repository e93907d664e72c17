"""Issue 10: a task of the user's own images, end to end. Folders of PNGs (blobs whose position
is the label) + a CSV and a Parquet label table -> a task configured only through params.yaml ->
a real `dvc repro` in a temporary copy of the repository -> refined images with the synthetic
labels byte for byte, metrics/<task>.json, the error curve and per-image predictions.

Also library-level: the generic regression head on colour images (the colour GAN path is the
same code with in_channels=3). Undecodable files are covered by tests/test_import_folder.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from test_pipeline import ROOT, _ran_stages, _run, copy_repo

from simgan.config import Params, ParamsError
from simgan.data.format import open_dataset, write_dataset
from simgan.estimators import RegressionNet, label_matrix, load_estimator, predict, save_estimator, train_estimator
from simgan.io import SimganError
from simgan.metrics import realism_accuracy
from simgan.train import build_networks

sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed
from stages.common import check_task, read_labels
from stages.estimator import variant
from stages.gan_setup import load_images

H, W = 20, 30
TASK = "blobs"


def blob_images(n: int, seed: int, real: bool, colour: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n images with one Gaussian blob at (x, y) ~ U: the labels. The "real" domain adds what the
    clean renderer lacks: a brighter, graded background and sensor noise."""
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(5, W - 5, n), rng.uniform(4, H - 4, n)], 1)
    yy, xx = np.mgrid[0:H, 0:W]
    img = 200 * np.exp(-((xx - xy[:, :1, None]) ** 2 + (yy - xy[:, 1:, None]) ** 2) / 8.0) + 20
    if real:
        img = img + 30 + 20 * xx / W + rng.normal(0, 8, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if colour:
        img = np.stack([img, img // 2 + 40, 255 - img], -1)
    return img, xy


def write_folder(root: Path, images: np.ndarray) -> list[str]:
    root.mkdir(parents=True)
    names = [f"img{i:03d}.png" for i in range(len(images))]
    for name, im in zip(names, images):
        Image.fromarray(im).save(root / name)
    return names


def test_generic_head_colour_regresses_label_units(tmp_path, monkeypatch):
    images, xy = blob_images(128, seed=0, real=False, colour=True)
    # (N,) and (N, k) columns, sorted by name: pos_0, pos_1, then w
    targets, columns = label_matrix({"w": xy[:, 0] * 0.01, "pos": xy})
    assert columns == ["pos_0", "pos_1", "w"] and targets.shape == (128, 3)
    model, hist = train_estimator(
        "generic",
        images,
        targets,
        steps=60,
        batch_size=32,
        lr=1e-3,
        seed=0,
        net_kwargs={"width": 0.25},
        columns=columns,
        log_every=20,
    )
    assert (
        isinstance(model, RegressionNet)
        and model.net_kwargs["in_channels"] == 3
        and model.net_kwargs["in_hw"] == [H, W]
    )
    pred = predict(model, "generic", images)
    # label units: the position error is a pixel or two, far below the spread (std ~6 px)
    mae = np.abs(pred - targets).mean(0)
    assert mae[0] < 3 and mae[1] < 3 and hist[-1]["loss"] < hist[0]["loss"], (mae, hist)
    save_estimator(tmp_path / "e.pt", model, {"variant": "x"})
    loaded, meta = load_estimator(tmp_path / "e.pt")
    assert meta["targets"]["columns"] == columns
    np.testing.assert_allclose(predict(loaded, "generic", images), pred)
    # a grayscale file cannot be scored by a colour model
    with pytest.raises(ValueError, match="channel"):
        predict(loaded, "generic", images[..., 0])
    # the colour realism classifier and GAN networks take 3 channels
    assert 0 <= realism_accuracy(images, blob_images(128, 1, True, True)[0], "generic", seed=0, steps=3) <= 100
    refiner, disc, _, _ = build_networks("gaze", "cpu", in_channels=3)
    x = torch.rand(2, 3, H, W) * 2 - 1
    assert refiner(x).shape == x.shape and disc(x).shape[:2] == (2, 1)
    # the GAN stages hold a colour file channels-first, still uint8
    monkeypatch.chdir(tmp_path)
    attrs = {"task": "generic", "domain": "synthetic", "source": "folder", "generator_version": "t", "seed": -1}
    write_dataset(Path("data") / TASK / "synthetic.h5", {"images": images[:8]}, attrs)
    held = load_images(TASK, "synthetic")
    assert held.dtype == torch.uint8 and torch.equal(held, torch.from_numpy(images[:8]).permute(0, 3, 1, 2))


def test_user_task_bad_inputs_name_the_key_or_file(tmp_path):
    p = Params(
        {
            "tasks": {"gaze": {}, "hand": {}, "blobs": {}},
            "variants": {
                "b": {"task": "blobs", "source": "synthetic", "data": "blobs/synthetic.h5", "size": 1, "augment": True}
            },
        },
        "params.yaml",
    )
    assert check_task("blobs", p) == "blobs" and check_task("gaze", p) == "gaze"
    with pytest.raises(ParamsError, match=r"params.yaml 'tasks'.*'blobz'"):
        check_task("blobz", p)
    with pytest.raises(ParamsError, match=r"key 'tasks.my-task'"):
        check_task("x", Params({"tasks": {"my-task": {}}}))
    with pytest.raises(ParamsError, match=r"key 'variants.b.augment'"):
        variant(p, "b")
    images = np.zeros((4, H, W), np.uint8)
    attrs = {"task": "generic", "domain": "real", "source": "folder", "generator_version": "t", "seed": -1}
    write_dataset(tmp_path / "unlabeled.h5", {"images": images}, attrs)
    with (
        open_dataset(tmp_path / "unlabeled.h5") as ds,
        pytest.raises(SimganError, match=r"unlabeled.h5: key 'labels/'"),
    ):
        read_labels(ds, "blobs")
    model, _ = train_estimator(
        "generic", images, np.ones((4, 1)), steps=1, batch_size=2, lr=1e-3, seed=0, net_kwargs={"width": 0.25}
    )
    save_estimator(tmp_path / "e.pt", model)
    ckpt = torch.load(tmp_path / "e.pt", weights_only=True)
    ckpt["meta"]["targets"]["std"] = []
    torch.save(ckpt, tmp_path / "e.pt")
    with pytest.raises(SimganError, match=r"e.pt: meta 'targets'"):
        load_estimator(tmp_path / "e.pt")


@pytest.mark.slow
def test_custom_task_dvc_repro(tmp_path):
    raw = tmp_path / "raw"
    syn, syn_xy = blob_images(96, seed=1, real=False)
    real, _ = blob_images(96, seed=2, real=True)
    test, test_xy = blob_images(32, seed=3, real=True)
    syn_names = write_folder(raw / "synthetic", syn)
    write_folder(raw / "real", real)
    test_names = write_folder(raw / "real_test", test)
    # labels in an order other than the files', to check rows follow the table
    order = np.random.default_rng(4).permutation(len(syn_names))
    pd.DataFrame({"file": [syn_names[i] for i in order], "x": syn_xy[order, 0], "y": syn_xy[order, 1]}).to_csv(
        raw / "labels.csv", index=False, float_format="%.17g"
    )
    pd.DataFrame({"file": test_names, "x": test_xy[:, 0], "y": test_xy[:, 1]}).to_parquet(raw / "real_test.parquet")

    repo = copy_repo(tmp_path / "repo")
    params_path = repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["tasks"][TASK] = {"curve": "error_cdf"}
    params["data"][TASK] = {
        "source": "folder",
        "folder": {
            "size": f"{H}x{W}",
            "color": False,
            "units": {"x": "px", "y": "px"},
            "synthetic": {"dir": str(raw / "synthetic"), "labels": str(raw / "labels.csv")},
            "real": {"dir": str(raw / "real"), "labels": None},
            "real_test": {"dir": str(raw / "real_test"), "labels": str(raw / "real_test.parquet")},
        },
    }
    params["gan"][TASK] = {
        "refiner": {"channels": 8, "blocks": 1},
        "train": {
            "pretrain_refiner_steps": 4,
            "pretrain_discriminator_steps": 2,
            "steps": 4,
            "batch_size": 8,
            "history_size": 32,
            "checkpoint_every": 4,
            "log_every": 2,
            "sample_every": 4,
            "bf16": False,
            "channels_last": False,
        },
    }
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    # without estimator / variants / evaluate sections the GAN half still runs
    ran = _ran_stages(_run([sys.executable, "-m", "dvc", "repro", f"refine@{TASK}"], repo).stdout)
    assert ran == {f"{s}@{TASK}" for s in ("inputs", "prepare", "pretrain", "adversarial", "refine")}, ran

    params["estimator"][TASK] = {
        "head": "regression",
        "base_n": 64,
        "steps": 30,
        "batch_size": 16,
        "lr": 0.001,
        "net": {"width": 0.25},
        "bf16": False,
        "channels_last": False,
    }
    params["evaluate"][TASK] = {"realism_n": 64, "realism_steps": 5}
    for source in ("synthetic", "refined"):
        params["variants"][f"{TASK}-{source}-1x"] = {
            "task": TASK,
            "source": source,
            "data": f"{TASK}/refined" if source == "refined" else f"{TASK}/{source}.h5",
            "size": 1,
            "augment": False,
        }
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran_stages(_run([sys.executable, "-m", "dvc", "repro", f"evaluate@{TASK}"], repo).stdout)
    assert ran == {f"estimator@{TASK}-synthetic-1x", f"estimator@{TASK}-refined-1x", f"evaluate@{TASK}"}, ran

    refined = {}
    for seed in params["seeds"]:  # one refined set per replicate
        with (
            open_dataset(repo / "data" / TASK / "synthetic.h5") as s,
            open_dataset(repo / "data" / TASK / "refined" / f"seed{seed}.h5") as r,
        ):
            assert s.task == r.task == "generic" and r.domain == "refined", seed
            for key in ("labels/x", "labels/y"):
                a, b = s[key], r[key]
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (seed, key)
            assert not np.array_equal(s["images"], r["images"]), seed
            refined[seed] = r["images"]
            # the CSV's text parsed back to the very doubles written, in the table's row order
            assert s["labels/x"].tobytes() == syn_xy[order, 0].tobytes()
    assert not np.array_equal(*list(refined.values())[:2])  # the replicates' GANs differ

    m = json.loads((repo / "metrics" / f"{TASK}.json").read_text())
    assert set(m["rows"]) == {"synthetic_1x", "refined_1x", "constant"}
    for name, row in m["rows"].items():
        assert {"mae", "rmse", "mae_x", "mae_y", "rmse_x", "rmse_y"} <= set(row), name
        assert 0 <= row["mae"]["mean"] < 3 and row["mae"]["std"] >= 0 and 0 <= row["mae_x"]["mean"] < W, (name, row)
    # a trained regressor beats the mean-label predictor on positions the blobs make obvious
    assert m["rows"]["synthetic_1x"]["mae"]["mean"] < m["rows"]["constant"]["mae"]["mean"]
    assert m["label_preservation"]["labels_identical_pct"] == 100.0
    assert 0 <= m["realism"]["refined_vs_real_acc_pct"] <= 100 and m["seeds"] == 2
    assert "refined_vs_synthetic_1x_rel_pct" in m["gain"]

    curve = pd.read_csv(repo / "plots" / TASK / "error_cdf.csv")
    assert curve.columns[0] == "threshold_std" and (curve["synthetic_1x"].diff().dropna() >= 0).all()
    pred = pd.read_parquet(repo / "reports" / TASK / "predictions.parquet")
    assert list(pred.columns) == ["index", "row", "seed", "error", "pred_x", "pred_y"]
    assert len(pred) == 3 * 2 * 32 and set(pred["row"]) == set(m["rows"])
    assert "| refined_1x |" in (repo / "reports" / TASK / "results.md").read_text()
    for rel in ("samples/seed0.png", "curves.png", "size.png"):
        assert (repo / "reports" / TASK / rel).stat().st_size > 0, rel


TUTORIAL = ROOT / "docs" / "tutorial_custom_data.md"


def tutorial_simgan_commands() -> list[list[str]]:
    """Every `simgan ...` command of the tutorial's bash blocks, as argv (continuations joined,
    comments dropped)."""
    import re
    import shlex

    out = []
    for block in re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["simgan"]:
                out.append(argv[1:])
    return out


def tutorial_params_block() -> str:
    """The YAML of the tutorial's section 2: what a user adds to params.yaml for `mytask`."""
    import re

    section = TUTORIAL.read_text().split("## 2. Configure", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL).group(1)


def check_quick_params(path: Path, before: dict) -> None:
    """params.yaml after the tutorial's `simgan params apply profiles/quick.yaml --task mytask`:
    every stage of mytask reads it without error, it holds the profile's values for mytask, and
    gaze's and hand's sections are those of before."""
    from simgan.config import flatten, seeds_param
    from simgan.estimators import EstimatorConfig
    from stages.evaluate import task_variants
    from stages.gan_setup import train_config

    p = Params.load(path)
    profile = yaml.safe_load((ROOT / "profiles" / "quick.yaml").read_text())
    cfg = train_config("mytask", p)
    quick_train = profile["gan"]["<task>"]["train"]
    assert {k: getattr(cfg, k) for k in quick_train} == quick_train
    assert p.section("gan.mytask.refiner") == profile["gan"]["<task>"]["refiner"]
    refiner, _, _, _ = build_networks("gaze", "cpu", refiner=p.section("gan.mytask.refiner"))
    assert refiner is not None and cfg.history_size >= cfg.batch_size
    est = EstimatorConfig.from_params(p, "mytask")
    assert (est.base_n, est.steps, est.batch_size) == (200, 100, 32) and est.head == "regression"
    assert set(task_variants(p, "mytask")) == {"mytask-synthetic-1x", "mytask-refined-1x"}
    assert seeds_param(p) == [0, 1] and p.get("evaluate.mytask.realism_steps", int) == 50
    changed = {k for k, v in flatten(p.data).items() if flatten(before).get(k, object()) != v}
    assert changed and all(k in ("profile", "seeds") or ".mytask." in k for k in changed), sorted(changed)


def test_tutorial_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """The tutorial's import / show / export commands, in a folder laid out as its section 1 says,
    and its refined set at data/mytask/refined/seed0.h5 written by refine_dataset: the user's file
    names come out the far end, on the refined PNGs and in their labels.csv. Its quick profile
    command, on the project's params.yaml with section 2's YAML added, gives params every stage of
    mytask reads (issue 23)."""
    from simgan.cli import main
    from simgan.config import apply_profile
    from simgan.nets import Refiner
    from simgan.refine import refine_dataset

    monkeypatch.chdir(tmp_path)
    raw = Path("data/raw/mytask")
    images, xy = blob_images(12, seed=1, real=False)
    names = [f"{'cam0' if i % 2 else 'cam1'}/shot_{i}.jpg" for i in range(len(images))]
    for name, im in zip(names, images):
        (raw / "synthetic" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(raw / "synthetic" / name, quality=95)
    pd.DataFrame({"file": names, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(raw / "labels.csv", index=False)
    commands = [[a.replace("/tmp/", f"{tmp_path}/tmp/") for a in argv] for argv in tutorial_simgan_commands()]
    assert [c[:2] for c in commands[:3]] == [
        ["import", "folder"],
        ["show", "/".join([str(tmp_path), "tmp", "mytask_synthetic.h5"])],
        ["export", f"{tmp_path}/tmp/mytask_synthetic.h5"],
    ]
    assert "--size" not in commands[0]  # one size for all: the tutorial's first import needs none
    assert commands[3] == ["params", "apply", "profiles/quick.yaml", "--task", "mytask"]
    refined = Path("data/mytask/refined/seed0.h5")
    assert commands[4] == ["export", str(refined), "--images", "out/mytask_refined_seed0"]
    for argv in commands:
        if argv[:2] == ["params", "apply"]:  # in a checkout whose params.yaml has section 2's task
            shutil.copytree(ROOT / "profiles", "profiles")
            shutil.copy(ROOT / "params.yaml", "params.yaml")
            Path("tutorial.yaml").write_text(tutorial_params_block())
            before = apply_profile("params.yaml", "tutorial.yaml")  # pasted in, flow style kept
        if str(refined) in argv and not refined.exists():  # what refine@mytask writes (an untrained refiner here)
            refiner = Refiner(channels=4, blocks=1).eval()
            refine_dataset(f"{tmp_path}/tmp/mytask_synthetic.h5", refined, refiner, progress=False)
        assert main(argv) == 0, argv
    check_quick_params(Path("params.yaml"), before)
    out = capsys.readouterr().out
    assert f"wrote 12 rows to {tmp_path}/tmp/mytask_synthetic.h5" in out and "wrote a grid of 12 of the 12 rows" in out
    with open_dataset(f"{tmp_path}/tmp/mytask_synthetic.h5") as ds:
        assert ds["images"].shape == (12, H, W) and list(ds.file_names()) == names
    assert list(pd.read_parquet(f"{tmp_path}/tmp/labels.parquet")["file"]) == names
    pngs = Path("out/mytask_refined_seed0")
    table = pd.read_csv(pngs / "labels.csv")
    assert list(table["file"]) == [n.replace(".jpg", ".png") for n in names]
    assert table["x"].to_numpy().tobytes() == pd.read_csv(raw / "labels.csv")["x"].to_numpy().tobytes()
    with open_dataset(refined) as ds:
        assert ds.domain == "refined" and list(ds.file_names()) == names
        for name, image in zip(table["file"], ds["images"]):
            with Image.open(pngs / name) as im:
                np.testing.assert_array_equal(np.asarray(im), image)
