"""Scale-out with real components: a Dask LocalCluster (2 worker processes, 1 thread each)
refines byte-identically to the one-process path; torchrun with 2 gloo processes trains the gaze
CNN to the same kind of checkpoint as one process; `dvc push`/`dvc pull` share outputs through a
local-directory remote."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simgan.data.format import open_dataset, write_dataset
from simgan.distributed import batch_slice, plan_shards, refine_sharded
from simgan.estimators import load_estimator, train_estimator
from simgan.nets import Refiner
from simgan.refine import refine_dataset
from simgan.train import save_model

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(**extra) -> dict:
    env = dict(os.environ, PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""), DVC_NO_ANALYTICS="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _gaze_file(path, n, seed=0, chunk_rows=32):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    g[:, 2] = -np.abs(g[:, 2]) - 1
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    arrays = {"images": rng.integers(0, 256, (n, 35, 55), dtype=np.uint8), "gaze": g,
              "labels/difficulty": rng.normal(size=n)}
    write_dataset(path, arrays, dict(task="gaze", domain="synthetic", source="test", generator_version="t", seed=seed),
                  chunk_rows=chunk_rows, units={"difficulty": "au"})


def test_shards_start_on_chunk_boundaries_and_cover_all_rows():
    for n, chunk, k in ((200, 32, 3), (5, 64, 4), (64, 64, 2), (1000, 7, 9), (33, 32, 8)):
        plan = plan_shards(n, chunk, k)
        assert plan[0][0] == 0 and plan[-1][1] == n and len(plan) <= k
        assert all(a % chunk == 0 and a < b for a, b in plan)
        assert all(b == c for (_, b), (c, _) in zip(plan, plan[1:]))
    assert [batch_slice(5, r, 2) for r in range(2)] == [slice(0, 2), slice(2, 5)]


@pytest.mark.slow
def test_dask_sharded_refinement_is_byte_identical(tmp_path):
    from distributed import Client, LocalCluster

    src = tmp_path / "synthetic.h5"
    _gaze_file(src, n=200)
    torch.manual_seed(0)
    refiner = Refiner(channels=8, blocks=1).eval()
    ckpt = tmp_path / "refiner.pt"
    save_model(ckpt, refiner, refiner_kwargs=dict(channels=8, blocks=1, kernel=3), in_channels=1)
    kw = dict(batch_size=24, bf16=True, channels_last=True, extra_attrs={"refiner_steps": 4})
    refine_dataset(src, tmp_path / "single.h5", refiner, progress=False, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        n = refine_sharded(src, tmp_path / "sharded.h5", str(ckpt), client=client, shards=3, **kw)
    assert n == 200
    assert not list(tmp_path.glob(".sharded.h5.shards-*"))  # shard files cleaned up
    with open_dataset(tmp_path / "single.h5") as a, open_dataset(tmp_path / "sharded.h5") as b:
        assert a.keys() == b.keys() and a.attrs == b.attrs and a.chunk_rows == b.chunk_rows
        for key in a.keys():
            x, y = a[key], b[key]
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), key
        assert b.unit("labels/difficulty") == "au"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_like_one(tmp_path):
    data = tmp_path / "gaze.h5"
    _gaze_file(data, n=64, seed=1)
    args = ["--task", "gaze", "--data", str(data), "--rows", "48", "--steps", "4", "--batch-size", "16",
            "--seed", "3", "--net", json.dumps({"width": 0.25, "fc": 64}), "--log-every", "2"]
    one = [sys.executable, "-m", "simgan.distributed", "train-estimator", *args,
           "--out", str(tmp_path / "one.pt"), "--history", str(tmp_path / "one.json")]
    two = [str(BIN / "torchrun"), "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "simgan.distributed", "train-estimator", *args,
           "--out", str(tmp_path / "two.pt"), "--history", str(tmp_path / "two.json")]
    env = _env(GLOO_SOCKET_IFNAME="lo")  # gloo's sockets on loopback only
    for cmd in (one, two):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    m1, meta1 = load_estimator(tmp_path / "one.pt")
    m2, meta2 = load_estimator(tmp_path / "two.pt")
    assert (meta1["processes"], meta2["processes"]) == (1, 2) and meta1["train_n"] == meta2["train_n"] == 48
    h1, h2 = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [2, 4]
    # Same batches, same augmentations, gradients averaged: the same training up to float
    # summation order (Adam's first steps move each weight by about lr, so compare at that scale).
    assert np.allclose([h["loss"] for h in h1], [h["loss"] for h in h2], rtol=1e-3)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) < 4e-3
    # one process through the entry point is exactly simgan.estimators.train_estimator
    with open_dataset(data) as ds:
        ref, _ = train_estimator("gaze", ds["images"][:48], ds["gaze"][:48], steps=4, batch_size=16, lr=1e-3, seed=3,
                                 net_kwargs={"width": 0.25, "fc": 64}, rotation_deg=20.0)
    assert all(torch.equal(ref.state_dict()[k], s1[k]) for k in s1)


@pytest.mark.slow
def test_dvc_push_pull_through_a_local_directory_remote(tmp_path):
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()

    def run(*args):
        r = subprocess.run(list(args), cwd=repo, env=_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (repo / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python -c \"open('out.txt','w').write('refined bytes')\"\n    outs: [out.txt]\n")
    run("dvc", "repro")
    run("dvc", "remote", "add", "-d", "shared", str(remote))
    run("dvc", "push")
    assert any(p.is_file() for p in remote.rglob("*"))
    # a second machine: same commit, empty cache and workspace
    (repo / "out.txt").unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    run("dvc", "pull")
    assert (repo / "out.txt").read_text() == "refined bytes"
    assert "up to date" in run("dvc", "status").lower()


@pytest.mark.slow
def test_torchrun_trains_a_user_task_from_its_label_columns(tmp_path):
    # A user task's file (`simgan import folder`) holds labels/<name> columns, not gaze vectors:
    # the entry point reads them as the pipeline does and saves the targets a checkpoint needs.
    rng = np.random.default_rng(0)
    data = tmp_path / "blobs.h5"
    arrays = {"images": rng.integers(0, 256, (32, 24, 24), dtype=np.uint8), "labels/x": rng.normal(5, 2, 32),
              "labels/size": rng.normal(1, 0.5, (32, 2))}
    write_dataset(data, arrays, dict(task="generic", domain="synthetic", source="folder", generator_version="t", seed=-1),
                  units={"x": "px", "size": "px"})
    cmd = [str(BIN / "torchrun"), "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "simgan.distributed", "train-estimator", "--task", "generic",
           "--data", str(data), "--steps", "3", "--batch-size", "8", "--net", json.dumps({"width": 0.25}),
           "--rotation-deg", "0", "--out", str(tmp_path / "e.pt")]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(GLOO_SOCKET_IFNAME="lo"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    model, meta = load_estimator(tmp_path / "e.pt")
    assert meta["processes"] == 2 and model.targets["columns"] == ["size_0", "size_1", "x"]
    assert model.targets["mean"][2] == pytest.approx(float(arrays["labels/x"].mean()))
