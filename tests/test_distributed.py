"""Scale-out with real components: a Dask LocalCluster (2 worker processes, 1 thread each)
refines byte-identically to the one-process path; 2 gloo processes train on the very batches of
one process, and torchrun with 2 gloo processes trains the gaze CNN to the same kind of checkpoint
as one process, with params.yaml's estimator settings; `dvc push`/`dvc pull` share outputs through
a local-directory remote."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml

from simgan.augment import photometric_augment
from simgan.checkpoint import save_model
from simgan.data.format import open_dataset, write_dataset
from simgan.distributed import main as distributed_main
from simgan.distributed import plan_shards, refine_sharded
from simgan.estimators import EstimatorConfig, GazeNet, batch_slice, load_estimator, train_estimator
from simgan.nets import Refiner
from simgan.refine import refine_dataset

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(**extra) -> dict:
    env = dict(
        os.environ,
        PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""),
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def _gaze_file(path, n, seed=0, chunk_rows=32):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    g[:, 2] = -np.abs(g[:, 2]) - 1
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    arrays = {
        "images": rng.integers(0, 256, (n, 35, 55), dtype=np.uint8),
        "gaze": g,
        "labels/difficulty": rng.normal(size=n),
    }
    write_dataset(
        path,
        arrays,
        dict(task="gaze", domain="synthetic", source="test", generator_version="t", seed=seed),
        chunk_rows=chunk_rows,
        units={"difficulty": "au"},
    )


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
    ckpt = tmp_path / "refiners" / "seed1.pt"  # one replicate's refiner, as `simgan refine` shards each
    save_model(ckpt, refiner, refiner_kwargs=dict(channels=8, blocks=1, kernel=3), in_channels=1)
    # what refine_settings passes for replicate 1: its noise seed is refine.seed + 1
    kw = dict(
        batch_size=24, bf16=True, channels_last=True, noise_seed=1, extra_attrs={"refiner_steps": 4, "replicate": 1}
    )
    refine_dataset(src, tmp_path / "single.h5", refiner, progress=False, **kw)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
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


def _torchrun_train_estimator() -> list[str]:
    """torchrun of the estimator entry point on 2 local ranks, a free port each time."""
    return [
        str(BIN / "torchrun"),
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "simgan.distributed",
        "train-estimator",
    ]


TINY_GAZE = {"steps": 4, "batch_size": 16, "lr": 1e-3, "net": {"width": 0.25, "fc": 64}, "log_every": 2}


def _params(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump({"estimator": sections}))
    return path


def _train_recording_inputs(images, labels, cfg):
    """train_estimator, also returning every batch the network saw (after slicing and augmentation)."""
    seen, forward = [], GazeNet.forward

    def recording(self, x):
        seen.append(x.detach().clone())
        return forward(self, x)

    GazeNet.forward = recording
    try:
        model, history = train_estimator("gaze", images, labels, cfg, seed=3, augment=photometric_augment("gaze"))
    finally:
        GazeNet.forward = forward
    return model, history, seen


def _gloo_rank(rank: int, world: int, init_file: str, data: str, out: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's sockets on loopback only
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        with open_dataset(data) as ds:
            model, history, seen = _train_recording_inputs(
                ds["images"][:48], ds["gaze"][:48], EstimatorConfig(**TINY_GAZE)
            )
        torch.save({"state": model.state_dict(), "history": history, "seen": seen}, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_train_on_the_batches_of_one_process(tmp_path):
    """The one loop in a 2-process group: each rank sees its slice of exactly the batch (and the
    augmentation) the one-process run draws, and the ranks end with the same weights, which match
    the one-process weights up to float summation order."""
    data = tmp_path / "gaze.h5"
    _gaze_file(data, n=64, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with open_dataset(data) as ds:
            one, one_history, one_seen = _train_recording_inputs(
                ds["images"][:48], ds["gaze"][:48], EstimatorConfig(**TINY_GAZE)
            )
        ctx = mp.get_context("fork")
        procs = [
            ctx.Process(
                target=_gloo_rank, args=(r, 2, str(tmp_path / "init"), str(data), str(tmp_path / f"rank{r}.pt"))
            )
            for r in range(2)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
    finally:
        torch.set_num_threads(threads)
    assert [proc.exitcode for proc in procs] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert len(one_seen) == len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == TINY_GAZE["steps"]
    for step, whole in enumerate(one_seen):
        parts = [rank["seen"][step] for rank in ranks]
        assert [len(x) for x in parts] == [batch_slice(16, r, 2).stop - batch_slice(16, r, 2).start for r in range(2)]
        assert torch.equal(torch.cat(parts), whole), step
    s0, s1, s = ranks[0]["state"], ranks[1]["state"], one.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s)  # DDP keeps the ranks in step
    assert max(float((s0[k] - s[k]).abs().max()) for k in s) < 4e-3
    for h in ranks:
        assert [r["step"] for r in h["history"]] == [r["step"] for r in one_history] == [2, 4]
        assert np.allclose([r["loss"] for r in h["history"]], [r["loss"] for r in one_history], rtol=1e-3)


def test_train_estimator_entry_reads_params_and_names_a_bad_key(tmp_path, monkeypatch, capsys):
    data = tmp_path / "gaze.h5"
    _gaze_file(data, n=40, seed=1)
    monkeypatch.chdir(tmp_path)
    _params(tmp_path / "params.yaml", gaze={**TINY_GAZE, "steps": 2, "rotation_deg": 0})
    args = ["train-estimator", "--task", "gaze", "--data", str(data), "--rows", "32", "--seed", "3", "--out", "e.pt"]
    assert distributed_main(args) == 0
    model, meta = load_estimator(tmp_path / "e.pt")
    assert meta == {"task": "gaze", "seed": 3, "train_n": 32, "processes": 1, "data": str(data)}
    with open_dataset(data) as ds:
        ref, _ = train_estimator(
            "gaze", ds["images"][:32], ds["gaze"][:32], EstimatorConfig(**{**TINY_GAZE, "steps": 2}), seed=3
        )
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in model.state_dict().items())
    _params(tmp_path / "bad.yaml", gaze={**TINY_GAZE, "learning_rate": 0.1})
    assert distributed_main([*args, "--params", "bad.yaml", "--out", "f.pt"]) == 2
    assert "bad.yaml: key 'estimator.gaze.learning_rate': unknown estimator parameter" in capsys.readouterr().err
    assert not (tmp_path / "f.pt").exists()


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_like_one(tmp_path):
    data = tmp_path / "gaze.h5"
    _gaze_file(data, n=64, seed=1)
    _params(tmp_path / "params.yaml", gaze=TINY_GAZE)
    args = ["--task", "gaze", "--data", str(data), "--rows", "48", "--seed", "3"]
    one = [
        sys.executable,
        "-m",
        "simgan.distributed",
        "train-estimator",
        *args,
        "--out",
        str(tmp_path / "one.pt"),
        "--history",
        str(tmp_path / "one.json"),
    ]
    two = [
        *_torchrun_train_estimator(),
        *args,
        "--out",
        str(tmp_path / "two.pt"),
        "--history",
        str(tmp_path / "two.json"),
    ]
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
        ref, _ = train_estimator("gaze", ds["images"][:48], ds["gaze"][:48], EstimatorConfig(**TINY_GAZE), seed=3)
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
        "stages:\n  make:\n    cmd: python -c \"open('out.txt','w').write('refined bytes')\"\n    outs: [out.txt]\n"
    )
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
    arrays = {
        "images": rng.integers(0, 256, (32, 24, 24), dtype=np.uint8),
        "labels/x": rng.normal(5, 2, 32),
        "labels/size": rng.normal(1, 0.5, (32, 2)),
    }
    write_dataset(
        data,
        arrays,
        dict(task="generic", domain="synthetic", source="folder", generator_version="t", seed=-1),
        units={"x": "px", "size": "px"},
    )
    _params(
        tmp_path / "params.yaml",
        blobs={"head": "regression", "steps": 3, "batch_size": 8, "lr": 1e-3, "net": {"width": 0.25}},
    )
    cmd = [
        *_torchrun_train_estimator(),
        "--task",
        "blobs",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "e.pt"),
    ]
    r = subprocess.run(
        cmd, cwd=tmp_path, env=_env(GLOO_SOCKET_IFNAME="lo"), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    model, meta = load_estimator(tmp_path / "e.pt")
    assert meta["processes"] == 2 and model.targets["columns"] == ["size_0", "size_1", "x"]
    assert model.targets["mean"][2] == pytest.approx(float(arrays["labels/x"].mean()))
