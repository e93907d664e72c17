"""Bad input (issue 9): malformed params, malformed data set files, corrupt images, a full disk, a
stale DVC lock. Each must stop with one line naming the file/key/param and what was expected,
exit status 2, and leave every file written before it byte for byte as it was."""

from __future__ import annotations

import json
import math
import resource
import signal

import h5py
import numpy as np
import pytest
import zc.lockfile
from PIL import Image

from .conftest import PYTHON, assert_user_error, dvc, kill_group, run, snapshot, spawn, stage, wait_for, write_params

pytestmark = pytest.mark.faults

SIMGAN = [PYTHON, "-m", "simgan.cli"]
OUTPUTS = ("data", "models")


def _train(**kw):
    return lambda p: p["gan"]["gaze"]["train"].update(kw)


def _data(**kw):
    return lambda p: p["data"]["gaze"].update(kw)


# (stage, params edit, what the one error line must contain)
PARAMS_CASES = {
    "negative lr": (
        "pretrain",
        _train(lr=-0.001),
        ["params.yaml", "'gan.gaze.train.lr'", "expected a finite number > 0", "-0.001"],
    ),
    "NaN lr": (
        "pretrain",
        _train(lr=math.nan),
        ["params.yaml", "'gan.gaze.train.lr'", "expected a finite number > 0", "nan"],
    ),
    "batch larger than the data": (
        "pretrain",
        _train(batch_size=300, history_size=600),
        ["params.yaml", "'gan.gaze.train.batch_size'", "expected <= the number of real images (256)", "300"],
    ),
    "history B < batch b": (
        "pretrain",
        _train(history_size=4),
        ["params.yaml", "'gan.gaze.train.history_size'", "expected 0 (disabled) or >= batch_size b=8", "4"],
    ),
    "quoted number": (
        "pretrain",
        _train(batch_size="eight"),
        ["params.yaml", "'gan.gaze.train.batch_size'", "expected int", "'eight'"],
    ),
    "bool as text": (
        "pretrain",
        _train(bf16="yes please"),
        ["params.yaml", "'gan.gaze.train.bf16'", "expected true, false or 'auto'"],
    ),
    "misspelt key": (
        "pretrain",
        _train(learnin_rate=0.1),
        ["params.yaml", "'gan.gaze.train.learnin_rate'", "unknown training parameter", "'lr'"],
    ),
    "unknown source": (
        "prepare",
        _data(source="foo"),
        [
            "params.yaml",
            "'data.gaze.source'",
            "expected one of ['embedded', 'kaggle', 'unityeyes+mpiigaze', 'folder']",
            "'foo'",
        ],
    ),
    "missing path for a non-embedded source": (
        "prepare",
        _data(source="kaggle"),
        ["params.yaml", "'data.gaze.kaggle.synthetic'", "expected an existing path", "'data/raw/gaze.h5'"],
    ),
}


@pytest.mark.parametrize("case", PARAMS_CASES)
def test_malformed_params_value(repo, case):
    module, edit, needles = PARAMS_CASES[case]
    write_params(repo, edit)
    kept = snapshot(repo, *OUTPUTS)
    assert_user_error(stage(module, "gaze", repo), *needles)
    assert snapshot(repo, *OUTPUTS) == kept


def test_params_file_that_is_not_yaml(repo):
    (repo / "params.yaml").write_text("gan: {gaze: [unclosed\n")
    kept = snapshot(repo, *OUTPUTS)
    assert_user_error(stage("pretrain", "gaze", repo), "params.yaml", "not valid YAML")
    assert snapshot(repo, *OUTPUTS) == kept


# ---------------------------------------------------------------------------------------------
# Data set files: data/gaze/synthetic.h5 replaced by a malformed one, then the stage run directly.


def _rewrite(path, edit) -> None:
    """Rewrite a data set file with raw h5py (the validated writer would refuse): edit(arrays)."""
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        arrays = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
    edit(arrays)
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs)
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def _nan_gaze(a):
    a["gaze"][3, 1] = np.nan


H5_CASES = {
    "missing image key": (
        lambda a: a.pop("images"),
        ["data/gaze/synthetic.h5", "key 'images'", "missing", "expected uint8 (N, 35, 55)"],
    ),
    "wrong dtype": (
        lambda a: a.update(images=a["images"].astype(np.float32)),
        ["data/gaze/synthetic.h5", "key 'images'", "expected uint8 (N, 35, 55)", "got float32 (1024, 35, 55)"],
    ),
    "wrong shape": (
        lambda a: a.update(images=np.ascontiguousarray(a["images"].transpose(0, 2, 1))),
        ["data/gaze/synthetic.h5", "key 'images'", "expected uint8 (N, 35, 55)", "got uint8 (1024, 55, 35)"],
    ),
    "NaN label": (_nan_gaze, ["data/gaze/synthetic.h5", "key 'gaze'", "expected finite values", "at row 3"]),
    "zero rows": (
        lambda a: a.update({k: v[:0] for k, v in a.items()}),
        ["data/gaze/synthetic.h5", "key 'images'", "expected at least one row"],
    ),
}


@pytest.mark.parametrize("case", H5_CASES)
def test_malformed_data_set_file(repo, case):
    edit, needles = H5_CASES[case]
    _rewrite(repo / "data" / "gaze" / "synthetic.h5", edit)
    kept = snapshot(repo, *OUTPUTS)
    assert_user_error(stage("pretrain", "gaze", repo), *needles)
    assert snapshot(repo, *OUTPUTS) == kept


def test_truncated_data_set_file(repo):
    path = repo / "data" / "gaze" / "synthetic.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    kept = snapshot(repo, *OUTPUTS)
    assert_user_error(
        stage("pretrain", "gaze", repo), "data/gaze/synthetic.h5", "expected a readable HDF5 data set file"
    )
    assert snapshot(repo, *OUTPUTS) == kept


def test_labels_missing_where_labels_are_needed(repo):
    # the GAN takes unlabeled images; the downstream estimator needs the gaze labels
    _rewrite(repo / "data" / "gaze" / "synthetic.h5", lambda a: a.pop("gaze"))
    kept = snapshot(repo, *OUTPUTS)
    assert_user_error(
        stage("estimator", "gaze-synthetic-1x", repo),
        "data/gaze/synthetic.h5",
        "key 'gaze'",
        "missing",
        "float32 (N, 3)",
    )
    assert snapshot(repo, *OUTPUTS) == kept


# ---------------------------------------------------------------------------------------------
# Importer, disk, DVC lock


def test_corrupt_image_in_folder_import(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((35, 55), 60 * i, np.uint8)).save(src / f"eye{i}.png")
    out = tmp_path / "eyes.h5"
    run(SIMGAN + ["import", "folder", src, "--out", out, "--size", "35x55", "--workers", "1"], tmp_path)
    before = out.read_bytes()
    (src / "eye3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, then garbage
    r = run(
        SIMGAN + ["import", "folder", src, "--out", out, "--size", "35x55", "--workers", "1"], tmp_path, check=False
    )
    assert_user_error(r, "eye3.png", "cannot decode image", "--skip-bad")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eyes.h5", "images"]


def _file_size_limit(nbytes: int):
    def limit():
        # SIGXFSZ would kill the child silently; ignored, write() fails with EFBIG like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


def test_disk_full_while_writing(tmp_path):
    out = tmp_path / "X.h5"
    simulate = SIMGAN + ["simulate", "eyes", "--seed", "0", "--out", out, "--workers", "1", "--no-progress", "--n"]
    run(simulate + ["64"], tmp_path)
    before = out.read_bytes()
    # 5000 eyes are ~10 MB; the limit stops the writer at 1 MB
    r = run(simulate + ["5000"], tmp_path, check=False, preexec_fn=_file_size_limit(1 << 20))
    assert_user_error(r, str(out), "cannot write the data set file", "[Errno 27] File too large", "left unchanged")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["X.h5"]  # no temp file left behind


def _rwlock_writers(repo) -> list:
    try:
        lock = json.loads((repo / ".dvc" / "tmp" / "rwlock").read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return list(lock.get("write", {}).values())


def test_stale_dvc_lock_of_a_killed_repro(repo):
    write_params(repo, _train(seed=1))  # pretrain@gaze has work to do
    proc = spawn([PYTHON, "-m", "dvc", "repro", "pretrain@gaze"], repo)
    writers = wait_for(lambda: _rwlock_writers(repo), proc)
    kill_group(proc)
    assert writers[0]["pid"] == proc.pid and _rwlock_writers(repo)  # left behind by the dead process
    r = dvc(repo, "repro", "pretrain@gaze")
    assert "had been killed. Auto removed it from the lock file" in r.stderr
    assert _rwlock_writers(repo) == []
    assert "pretrain@gaze" not in dvc(repo, "status", "pretrain@gaze").stdout


def test_dvc_lock_held_by_a_live_process(repo):
    holder = zc.lockfile.LockFile(str(repo / ".dvc" / "tmp" / "lock"))
    try:
        r = dvc(repo, "repro", "pretrain@gaze", check=False)
    finally:
        holder.close()
    assert r.returncode != 0 and "Unable to acquire lock" in r.stderr, r.stderr
    assert "pretrain@gaze" not in dvc(repo, "status", "pretrain@gaze").stdout
