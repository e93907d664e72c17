"""Interruptions and divergence (issue 9): a SIGKILL during adversarial training or refinement,
and a loss that becomes NaN/inf. Real stage processes in a temporary copy of the repository, on
the tiny profile's two whole-pipeline replicates (seeds 0 and 1, trained side by side in forked
workers, each with its own running checkpoint in .simgan/checkpoints/)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal

import pytest
import torch

from simgan.checkpoint import load_checkpoint
from simgan.data.format import open_dataset
from simgan.io import SimganError

from .conftest import (
    ADVERSARIAL_STEPS,
    PRETRAIN_STEPS,
    PYTHON,
    SEEDS,
    assert_user_error,
    copy_tree,
    dvc,
    kill_group,
    snapshot,
    spawn,
    stage,
    wait_for,
    write_params,
)

pytestmark = pytest.mark.faults


CHECKPOINT = re.compile(r"gaze-(pretrain|adversarial)-seed(\d+)-[0-9a-f]{16}\.pt")


def _refiner_weights(repo, seed: int) -> dict:
    path = repo / "models" / "gaze" / "refiners" / f"seed{seed}.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _refiners(repo) -> list:
    return sorted((repo / "models" / "gaze" / "refiners").glob("*"))


class _CheckpointWatch:
    """Reports (seed, step) of the first replicate whose running checkpoint has moved past the
    pretrained one (the stage starts each from a copy of models/gaze/pretrained/seed<k>.pt); loads
    a file only when it was replaced."""

    def __init__(self, repo):
        self.dir = repo / ".simgan" / "checkpoints"
        self.seen = {}

    def __call__(self):
        for f in sorted(self.dir.glob("gaze-adversarial-seed*-*.pt")):
            m = CHECKPOINT.fullmatch(f.name)
            if not m:
                continue
            try:
                stamp = f.stat().st_mtime_ns
                if stamp == self.seen.get(f.name):
                    continue
                self.seen[f.name] = stamp
                step = int(load_checkpoint(f)["step"])
            except (FileNotFoundError, SimganError):
                continue  # replaced between listing and reading: look again
            if step > PRETRAIN_STEPS:
                return int(m.group(2)), step
        return None


def _kept_checkpoints(repo) -> dict:
    """stage -> the seeds whose checkpoint .simgan/checkpoints/ holds; fails on any other file
    (a temp file of a killed save, a second checkpoint of one replicate)."""
    kept = {}
    for f in sorted((repo / ".simgan" / "checkpoints").iterdir()):
        m = CHECKPOINT.fullmatch(f.name)
        assert m, f"unexpected file {f.name}"
        kept.setdefault(m.group(1), []).append(int(m.group(2)))
    return kept


def test_kill_9_during_adversarial_training_resumes_to_identical_weights(trained_repo, repo):
    proc = spawn([PYTHON, "-m", "stages.adversarial", "gaze"], repo)
    seed, killed_after = wait_for(_CheckpointWatch(repo), proc)
    kill_group(proc)  # the stage and its replicate workers: one process group
    assert proc.returncode == -9
    assert PRETRAIN_STEPS < killed_after < PRETRAIN_STEPS + ADVERSARIAL_STEPS
    assert _refiners(repo) == []

    out = dvc(repo, "repro", "adversarial@gaze").stdout
    m = re.search(rf"adversarial gaze: seed {seed} resumes (\S+) at step (\d+)", out)
    assert m, out
    assert CHECKPOINT.fullmatch(m.group(1).removeprefix(".simgan/checkpoints/")), m.group(1)
    assert int(m.group(2)) >= killed_after  # from the kill's checkpoint, not from the pretrained one

    for k_seed in SEEDS:  # every replicate ends where an uninterrupted run ends
        mine, reference = _refiner_weights(repo, k_seed), _refiner_weights(trained_repo, k_seed)
        assert mine.keys() == reference.keys()
        for k in reference:
            assert torch.equal(mine[k], reference[k]), (k_seed, k)
    # the finished replicates' checkpoints stay (a grown `seeds` reuses them), one per replicate
    # and stage, and no temp file of a killed save survives
    assert _kept_checkpoints(repo) == {"pretrain": SEEDS, "adversarial": SEEDS}
    assert "adversarial@gaze" not in dvc(repo, "status", "adversarial@gaze").stdout


def test_ctrl_c_during_adversarial_training_is_one_line_and_resumes(repo):
    """Ctrl-C (SIGINT to the foreground process group) printed a KeyboardInterrupt traceback."""
    proc = spawn([PYTHON, "-m", "stages.adversarial", "gaze"], repo)
    wait_for(_CheckpointWatch(repo), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == (
        "stage adversarial: interrupted; rerun `dvc repro` to resume from the last checkpoint"
    ), err[-3000:]
    assert _refiners(repo) == []
    # nothing half-written among the outputs: no temp file of an atomic write
    temps = [p for d in ("models", "plots", "reports") for p in (repo / d).rglob(".*.*-*")]
    assert temps == []
    out = dvc(repo, "repro", "adversarial@gaze").stdout
    assert re.search(r"adversarial gaze: seed \d+ resumes \S+ at step \d+", out), out
    # the workers the pool terminated may have died inside a checkpoint save: the rerun removes
    # such a temp file (simgan.io.atomic_path), so none survives it
    assert _kept_checkpoints(repo) == {"pretrain": SEEDS, "adversarial": SEEDS}


def _refine_temps(repo) -> list:
    return sorted((repo / "data" / "gaze" / "refined").glob(".seed*.h5.*"))


def _refined(repo) -> list:
    return sorted((repo / "data" / "gaze" / "refined").glob("seed*.h5"))


def _kill_refine_mid_run(repo) -> None:
    proc = spawn([PYTHON, "-m", "stages.refine", "gaze"], repo)
    wait_for(lambda: _refine_temps(repo), proc, interval=0.005)  # a replicate's writer has started
    kill_group(proc)  # the stage and its replicate workers
    assert proc.returncode == -9, "refinement finished before it could be killed: make it slower"


def test_kill_9_during_refinement_never_leaves_an_output_dvc_accepts(trained_repo, tmp_path):
    repo = copy_tree(trained_repo, tmp_path / "repo")
    write_params(repo, lambda p: p["refine"].update(batch_size=1))  # 1024 forward passes: seconds

    _kill_refine_mid_run(repo)
    assert _refined(repo) == []
    temps = _refine_temps(repo)
    assert temps and all(t.name.startswith(".") for t in temps)  # hidden, never an output name
    assert "refine@gaze" in dvc(repo, "status", "refine@gaze").stdout

    dvc(repo, "repro", "refine@gaze")
    assert [f.name for f in _refined(repo)] == [f"seed{seed}.h5" for seed in SEEDS]
    for seed in SEEDS:
        with open_dataset(repo / "data" / "gaze" / "refined" / f"seed{seed}.h5") as ds:
            assert ds.n == 1024 and ds.domain == "refined" and ds.attrs["replicate"] == seed
    assert _refine_temps(repo) == []  # the rerun removed the dead processes' temp files
    assert "refine@gaze" not in dvc(repo, "status", "refine@gaze").stdout

    # killed again, with committed outputs in place: they stay byte for byte what DVC recorded
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in _refined(repo)}
    _kill_refine_mid_run(repo)
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in _refined(repo)} == before


def test_a_killed_refinement_leaves_committed_outputs_up_to_date_for_dvc(trained_repo, tmp_path):
    """The killed workers' hidden temp files lie inside the output directory data/gaze/refined/;
    .dvcignore keeps them out of its hash, so DVC does not report the committed output modified."""
    repo = copy_tree(trained_repo, tmp_path / "repo")
    write_params(repo, lambda p: p["refine"].update(batch_size=1))
    dvc(repo, "repro", "refine@gaze")
    assert "refine@gaze" not in dvc(repo, "status", "refine@gaze").stdout
    _kill_refine_mid_run(repo)
    assert "refine@gaze" not in dvc(repo, "status", "refine@gaze").stdout


def test_divergence_stops_with_step_and_last_good_checkpoint(repo):
    # lr 1e6 overflows the discriminator a few steps in; a checkpoint every step keeps the last good one
    write_params(repo, lambda p: p["gan"]["gaze"]["train"].update(lr=1.0e6, checkpoint_every=1))
    lock = (repo / "dvc.lock").read_bytes()
    r = dvc(repo, "repro", "pretrain@gaze", check=False)
    assert r.returncode != 0 and "exited with 2" in r.stderr, r.stderr[-2000:]
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("stage pretrain: error:"))
    m = re.search(
        r"training diverged at step (\d+) \((\w+)\): (\w+) = (nan|inf|-inf); last good checkpoint kept at (\S+)$", line
    )
    assert m, line
    # the replicate's running checkpoint (models/gaze/pretrained/ gets a copy only once it finished)
    ckpt = m.group(5)
    assert ckpt.startswith(".simgan/checkpoints/") and CHECKPOINT.fullmatch(ckpt.rsplit("/", 1)[1]), ckpt
    assert int(CHECKPOINT.fullmatch(ckpt.rsplit("/", 1)[1]).group(2)) in SEEDS
    state = load_checkpoint(repo / ckpt)
    assert 0 < state["step"] <= int(m.group(1))
    for net in ("refiner", "discriminator"):
        assert all(bool(torch.isfinite(t).all()) for t in state[net].values()), net
    # a failed stage is never recorded: DVC reruns it next time
    assert (repo / "dvc.lock").read_bytes() == lock
    assert "pretrain@gaze" in dvc(repo, "status", "pretrain@gaze").stdout


def test_divergence_before_any_checkpoint_says_so(repo):
    write_params(repo, lambda p: p["gan"]["gaze"]["train"].update(lr=1.0e30))
    shutil.rmtree(repo / "models" / "gaze" / "pretrained")  # as `dvc repro` does before rerunning the stage
    kept = snapshot(repo, "data")
    r = stage("pretrain", "gaze", repo)
    line = assert_user_error(
        r,
        "training diverged at step 1",
        "= nan",
        "no checkpoint was written yet",
        ".simgan/checkpoints/gaze-pretrain-seed",
    )
    assert re.search(r"\(\.simgan/checkpoints/gaze-pretrain-seed\d+-[0-9a-f]{16}\.pt does not exist\)", line), line
    assert not (repo / "models" / "gaze" / "pretrained").exists()
    assert snapshot(repo, "data") == kept
