"""Issue 21: raw inputs tracked. A changed label table or a deleted image of the selected
`data.<task>.source` shows prepare@<task> as changed in `dvc status`, and `dvc repro` reruns it;
the embedded source has no raw inputs and runs from a fresh clone with nothing under data/raw.

DVC cannot name the selected source's paths in dvc.yaml (no nested interpolation, no list-valued
deps), so the `inputs` stage links them into six fixed slots that prepare depends on
(stages/prepare.py SOURCE_INPUTS); the unit tests check the links, the slow test a real `dvc`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_custom_task import H, W, blob_images, write_folder
from test_pipeline import ROOT, _ran_stages, _run, copy_repo

from simgan.config import Params, ParamsError
from simgan.data.format import open_dataset
from simgan.io import SimganError

sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed
from stages.prepare import INPUT_SLOTS, inputs_dir, link_inputs

TASK = "blobs"


def blob_raw(raw: Path) -> None:
    """The tutorial's layout under `raw`: synthetic/ + labels.csv, real/, real_test/ + real_test.csv."""
    syn, syn_xy = blob_images(48, seed=1, real=False)
    test, test_xy = blob_images(16, seed=3, real=True)
    syn_names = write_folder(raw / "synthetic", syn)
    write_folder(raw / "real", blob_images(48, seed=2, real=True)[0])
    test_names = write_folder(raw / "real_test", test)
    pd.DataFrame({"file": syn_names, "x": syn_xy[:, 0], "y": syn_xy[:, 1]}).to_csv(
        raw / "labels.csv", index=False, float_format="%.17g"
    )
    pd.DataFrame({"file": test_names, "x": test_xy[:, 0], "y": test_xy[:, 1]}).to_csv(
        raw / "real_test.csv", index=False, float_format="%.17g"
    )


def folder_section(raw: str) -> dict:
    return {
        "size": f"{H}x{W}",
        "color": False,
        "units": {"x": "px", "y": "px"},
        "synthetic": {"dir": f"{raw}/synthetic", "labels": f"{raw}/labels.csv"},
        "real": {"dir": f"{raw}/real", "labels": None},
        "real_test": {"dir": f"{raw}/real_test", "labels": f"{raw}/real_test.csv"},
    }


def links(task: str) -> dict[str, str | None]:
    """slot -> where its symlink points, None for an empty folder."""
    out = {}
    for slot in INPUT_SLOTS:
        path = inputs_dir(task) / slot
        if path.is_symlink():
            out[slot] = os.readlink(path)
        else:
            assert path.is_dir() and not any(path.iterdir()), path
            out[slot] = None
    return out


def test_slots_link_the_selected_sources_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blob_raw(Path("data/raw/blobs"))
    for name in ("gaze.h5", "real_gaze.h5", "real_gaze_test.h5"):
        Path("data/raw", name).write_bytes(b"kaggle file")
    Path("data/raw/nyu/dataset").mkdir(parents=True)
    params = {
        "tasks": {"gaze": {}, "hand": {}, TASK: {}},
        "data": {
            "gaze": {
                "source": "kaggle",
                "kaggle": {
                    "synthetic": "data/raw/gaze.h5",
                    "real": "data/raw/real_gaze.h5",
                    "real_test": "data/raw/real_gaze_test.h5",
                },
            },
            "hand": {"source": "nyu", "nyu": {"dir": "data/raw/nyu/dataset"}},
            TASK: {"source": "folder", "folder": folder_section("data/raw/blobs")},
        },
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))

    manifest = link_inputs(TASK, Params.load())
    up = "../../raw/blobs"  # relative links: data/blobs/inputs/ -> data/raw/blobs/
    assert links(TASK) == {
        "synthetic": f"{up}/synthetic",
        "synthetic_labels": f"{up}/labels.csv",
        "real": f"{up}/real",
        "real_labels": None,
        "real_test": f"{up}/real_test",
        "real_test_labels": f"{up}/real_test.csv",
    }
    assert json.loads(Path("data/blobs/inputs.json").read_text()) == manifest
    assert manifest["source"] == "folder" and manifest["inputs"]["real_labels"] is None
    assert (inputs_dir(TASK) / "synthetic_labels").read_bytes() == Path("data/raw/blobs/labels.csv").read_bytes()

    link_inputs("gaze", Params.load())
    assert links("gaze") == {
        "synthetic": "../../raw/gaze.h5",
        "synthetic_labels": None,
        "real": "../../raw/real_gaze.h5",
        "real_labels": None,
        "real_test": "../../raw/real_gaze_test.h5",
        "real_test_labels": None,
    }
    link_inputs("hand", Params.load())  # one folder for all three splits: linked (and hashed) once
    assert links("hand") == {**dict.fromkeys(INPUT_SLOTS), "synthetic": "../../raw/nyu/dataset"}

    # back to the embedded source: every slot an empty folder; the raw files are untouched
    params["data"]["gaze"]["source"] = "embedded"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert link_inputs("gaze", Params.load())["inputs"] == dict.fromkeys(INPUT_SLOTS)
    assert links("gaze") == dict.fromkeys(INPUT_SLOTS)
    assert Path("data/raw/gaze.h5").read_bytes() == b"kaggle file"
    assert sorted(p.name for p in Path("data/gaze").iterdir()) == ["inputs", "inputs.json"]  # no temp folder left

    # an absolute path stays absolute; a missing one names its key, and the old links stay
    params["data"][TASK]["folder"]["real"]["dir"] = str(tmp_path / "elsewhere")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(
        ParamsError, match=r"key 'data.blobs.folder.real.dir': expected an existing path .* \(not found\)"
    ):
        link_inputs(TASK, Params.load())
    assert links(TASK)["real"] == f"{up}/real"
    (tmp_path / "elsewhere").mkdir()
    link_inputs(TASK, Params.load())
    assert links(TASK)["real"] == str(tmp_path / "elsewhere")
    assert len(list(Path("data/raw/blobs/real").iterdir())) == 48


@pytest.mark.slow
def test_dvc_sees_changed_raw_inputs_and_reruns_prepare(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    assert not (repo / "data").exists()
    dvc = [sys.executable, "-m", "dvc"]

    # the embedded source from a fresh clone: no raw inputs, and nothing to redo afterwards
    ran = _ran_stages(_run([*dvc, "repro", "prepare@gaze"], repo).stdout)
    assert ran == {"inputs@gaze", "prepare@gaze"}, ran
    assert "up to date" in _run([*dvc, "status", "prepare@gaze"], repo).stdout

    raw = repo / "data" / "raw" / TASK  # the tutorial's layout
    blob_raw(raw)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"][TASK] = {"curve": "error_cdf"}
    params["data"][TASK] = {"source": "folder", "folder": folder_section(f"data/raw/{TASK}")}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran_stages(_run([*dvc, "repro", f"prepare@{TASK}"], repo).stdout) == {f"inputs@{TASK}", f"prepare@{TASK}"}
    status = _run([*dvc, "status", f"prepare@{TASK}"], repo).stdout
    assert "Data and pipelines are up to date" in status, status

    # every x label shifted by 10: prepare is changed, and its rerun imports the new labels
    labels = pd.read_csv(raw / "labels.csv")
    labels["x"] += 10
    labels.to_csv(raw / "labels.csv", index=False, float_format="%.17g")
    status = _run([*dvc, "status", f"prepare@{TASK}"], repo).stdout
    assert f"prepare@{TASK}" in status and f"data/{TASK}/inputs/synthetic_labels" in status, status
    assert _ran_stages(_run([*dvc, "repro", f"prepare@{TASK}"], repo).stdout) == {f"prepare@{TASK}"}
    with open_dataset(repo / "data" / TASK / "synthetic.h5") as ds:
        assert ds["labels/x"].tolist() == labels["x"].tolist()

    # one real image deleted: the same
    (raw / "real" / "img007.png").unlink()
    status = _run([*dvc, "status", f"prepare@{TASK}"], repo).stdout
    assert f"prepare@{TASK}" in status and f"data/{TASK}/inputs/real" in status, status
    assert _ran_stages(_run([*dvc, "repro", f"prepare@{TASK}"], repo).stdout) == {f"prepare@{TASK}"}
    with open_dataset(repo / "data" / TASK / "real.h5", require_labels=False) as ds:
        assert ds.n == 47

    # nothing changed: a no-op, also for the embedded task beside it
    assert _ran_stages(_run([*dvc, "repro", f"prepare@{TASK}", "prepare@gaze"], repo).stdout) == set()


def test_files_put_among_the_links_are_never_deleted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blob_raw(Path("data/raw/blobs"))
    params = {"tasks": {TASK: {}}, "data": {TASK: {"source": "folder", "folder": folder_section("data/raw/blobs")}}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    link_inputs(TASK, Params.load())
    (inputs_dir(TASK) / "real_labels" / "notes.txt").write_text("mine")
    with pytest.raises(
        SimganError, match=r"data/blobs/inputs: expected the folder of input links .* found other files"
    ):
        link_inputs(TASK, Params.load())
    assert (inputs_dir(TASK) / "real_labels" / "notes.txt").read_text() == "mine"
    assert os.readlink(inputs_dir(TASK) / "synthetic") == "../../raw/blobs/synthetic"
    assert not list(Path("data", TASK).glob(".inputs.*"))  # checked before anything was made
