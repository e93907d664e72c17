"""Interruptions and divergence (issue 9): a SIGKILL during adversarial training or refinement,
and a loss that becomes NaN/inf. Real stage processes in a temporary copy of the repository."""

from __future__ import annotations

import hashlib
import os
import re
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


def _refiner_weights(repo) -> dict:
    return torch.load(repo / "models" / "gaze" / "refiner.pt", map_location="cpu", weights_only=True)["model"]


class _CheckpointWatch:
    """Reports the running checkpoint's step once it has moved past the pretrained one (the stage
    starts from a copy of models/gaze/pretrained.pt); loads only when the file was replaced."""

    def __init__(self, repo):
        self.dir = repo / ".simgan" / "checkpoints"
        self.seen = None

    def __call__(self):
        files = list(self.dir.glob("gaze-adversarial-*.pt"))
        if len(files) != 1:
            return None
        try:
            stamp = files[0].stat().st_mtime_ns
            if stamp == self.seen:
                return None
            self.seen = stamp
            step = int(load_checkpoint(files[0])["step"])
        except (FileNotFoundError, SimganError):
            return None  # replaced between listing and reading: look again
        return step if step > PRETRAIN_STEPS else None


def test_kill_9_during_adversarial_training_resumes_to_identical_weights(trained_repo, repo):
    proc = spawn([PYTHON, "-m", "stages.adversarial", "gaze"], repo)
    killed_after = wait_for(_CheckpointWatch(repo), proc)
    kill_group(proc)
    assert proc.returncode == -9
    assert PRETRAIN_STEPS < killed_after < PRETRAIN_STEPS + ADVERSARIAL_STEPS
    assert not (repo / "models" / "gaze" / "refiner.pt").exists()

    out = dvc(repo, "repro", "adversarial@gaze").stdout
    m = re.search(r"adversarial gaze: resuming (\S+) at step (\d+)", out)
    assert m, out
    assert int(m.group(2)) >= killed_after  # from the kill's checkpoint, not from the pretrained one

    mine, reference = _refiner_weights(repo), _refiner_weights(trained_repo)
    assert mine.keys() == reference.keys()
    for k in reference:
        assert torch.equal(mine[k], reference[k]), k
    # the finished run removes its checkpoint, and no temp file of a killed save survives
    assert list((repo / ".simgan" / "checkpoints").iterdir()) == []
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
    assert not (repo / "models" / "gaze" / "refiner.pt").exists()
    temps = [p for d in ("models", "plots", "reports", ".simgan") for p in (repo / d).rglob(".*.*-*")]
    assert temps == []  # nothing half-written: no temp file of an atomic write
    out = dvc(repo, "repro", "adversarial@gaze").stdout
    assert re.search(r"adversarial gaze: resuming \S+ at step \d+", out), out


def _refine_temps(repo) -> list:
    return sorted((repo / "data" / "gaze").glob(".refined.h5.*"))


def _kill_refine_mid_run(repo) -> None:
    proc = spawn([PYTHON, "-m", "stages.refine", "gaze"], repo)
    wait_for(lambda: _refine_temps(repo), proc, interval=0.005)  # the writer has started
    kill_group(proc)
    assert proc.returncode == -9, "refinement finished before it could be killed: make it slower"


def test_kill_9_during_refinement_never_leaves_an_output_dvc_accepts(trained_repo, tmp_path):
    repo = copy_tree(trained_repo, tmp_path / "repo")
    write_params(repo, lambda p: p["refine"].update(batch_size=1))  # 1024 forward passes: seconds
    refined = repo / "data" / "gaze" / "refined.h5"

    _kill_refine_mid_run(repo)
    assert not refined.exists()
    assert [t.name.startswith(".") for t in _refine_temps(repo)] == [True]  # hidden, never the output name
    assert "refine@gaze" in dvc(repo, "status", "refine@gaze").stdout

    dvc(repo, "repro", "refine@gaze")
    with open_dataset(refined) as ds:
        assert ds.n == 1024 and ds.domain == "refined"
    assert _refine_temps(repo) == []  # the rerun removed the dead process's temp file
    assert "refine@gaze" not in dvc(repo, "status", "refine@gaze").stdout

    # killed again, with a committed output in place: the output stays byte for byte what DVC recorded
    before = hashlib.sha256(refined.read_bytes()).hexdigest()
    _kill_refine_mid_run(repo)
    assert hashlib.sha256(refined.read_bytes()).hexdigest() == before
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
    assert m.group(5) == "models/gaze/pretrained.pt"
    state = load_checkpoint(repo / m.group(5))
    assert 0 < state["step"] <= int(m.group(1))
    for net in ("refiner", "discriminator"):
        assert all(bool(torch.isfinite(t).all()) for t in state[net].values()), net
    # a failed stage is never recorded: DVC reruns it next time
    assert (repo / "dvc.lock").read_bytes() == lock
    assert "pretrain@gaze" in dvc(repo, "status", "pretrain@gaze").stdout


def test_divergence_before_any_checkpoint_says_so(repo):
    write_params(repo, lambda p: p["gan"]["gaze"]["train"].update(lr=1.0e30))
    (repo / "models" / "gaze" / "pretrained.pt").unlink()  # as `dvc repro` does before rerunning the stage
    kept = snapshot(repo, "data")
    r = stage("pretrain", "gaze", repo)
    assert_user_error(
        r, "training diverged at step 1", "= nan", "no checkpoint was written yet", "models/gaze/pretrained.pt"
    )
    assert not (repo / "models" / "gaze" / "pretrained.pt").exists()
    assert snapshot(repo, "data") == kept
