"""Shared by the fault-injection suite (issue 9): temporary copies of the repository on the tiny
profile, real subprocesses (stage modules, `dvc`, `simgan`), and byte snapshots of outputs.

One gaze pipeline is built per session (prepare@gaze + pretrain@gaze through a real `dvc repro`)
and every test works in its own copy of it, so a fault in one test never leaks into another and
the suite pays for the expensive stages once."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# Generous: the CI runner and the shared development machine are often loaded several times over.
TIMEOUT = 600

# On top of profiles/tiny.yaml. Adversarial training long enough (a few seconds) to be killed
# between two checkpoints; a synthetic set large enough that refinement at batch 1 takes seconds.
# The sizes the tests' expected messages quote are pinned here, not taken from tiny.yaml.
FAULT_PROFILE = {
    "data": {"gaze": {"synthetic_n": 1024, "real_n": 256}},
    "gan": {
        "gaze": {
            "train": {
                "pretrain_refiner_steps": 4,
                "pretrain_discriminator_steps": 2,
                "steps": 80,
                "batch_size": 8,
                "history_size": 32,
                "checkpoint_every": 10,
                "log_every": 10,
                "sample_every": 0,
            }
        }
    },
}
_TRAIN = FAULT_PROFILE["gan"]["gaze"]["train"]
# profiles/tiny.yaml's whole-pipeline replicates: each trains its own GAN and refined set
SEEDS = yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())["seeds"]
PRETRAIN_STEPS = _TRAIN["pretrain_refiner_steps"] + _TRAIN["pretrain_discriminator_steps"]
ADVERSARIAL_STEPS = _TRAIN["steps"]


def env() -> dict:
    e = dict(os.environ)
    # stage commands in dvc.yaml run `python -m stages...`: the venv's python must come first
    e["PATH"] = str(Path(PYTHON).parent) + os.pathsep + e.get("PATH", "")
    e.update(DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.pop("SIMGAN_DEBUG", None)  # the one-line error contract is what is under test
    return e


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def stage(module: str, arg: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run([PYTHON, "-m", f"stages.{module}", arg], cwd, check=False, **kw)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([PYTHON, "-m", "dvc", *args], cwd, check=check)


def assert_user_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and one line on stderr containing every needle (no traceback)."""
    assert r.returncode == 2, f"exit {r.returncode}, expected 2\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-3000:]}"
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def write_params(repo: Path, mutate) -> None:
    """Edit the repo's params.yaml through a function on its parsed dict."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def snapshot(repo: Path, *dirs: str) -> dict[str, str]:
    """sha256 of every file under `dirs`: compared after a fault to show nothing was overwritten."""
    out = {}
    for d in dirs:
        for p in sorted((repo / d).rglob("*")):
            if p.is_file():
                out[p.relative_to(repo).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _copy_working_tree(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files, as a fresh clone plus local edits would have."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/", "reports/", ".simgan/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)


def _shared(tmp_path_factory, name: str, build) -> Path:
    """A directory built once per test run, also across pytest-xdist workers (they share the
    parent of their base temp dir): built under a file lock into a temp name, renamed when done."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    done = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            work = root / f"{name}.building"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            build(work)
            work.rename(done)
    return done


def _build_gaze_repo(base: Path) -> None:
    _copy_working_tree(base)
    run(["git", "init", "-q"], base)
    run([PYTHON, "-m", "simgan.cli", "params", "apply", "profiles/tiny.yaml"], base)
    fault_profile = base / ".fault_profile.yaml"
    fault_profile.write_text(yaml.safe_dump(FAULT_PROFILE))
    run([PYTHON, "-m", "simgan.cli", "params", "apply", str(fault_profile)], base)
    fault_profile.unlink()
    # dvclive (adversarial stage) fails on a git repo without commits; a real checkout has them
    run(["git", "add", "-A"], base)
    run(["git", "-c", "user.name=faults", "-c", "user.email=faults@localhost", "commit", "-q", "-m", "tiny"], base)
    dvc(base, "repro", "pretrain@gaze")


@pytest.fixture(scope="session")
def gaze_repo(tmp_path_factory) -> Path:
    """A tiny-profile repository with prepare@gaze and pretrain@gaze reproduced by DVC. Read-only:
    tests work in their own copy (`repo`)."""
    return _shared(tmp_path_factory, "faults-gaze", _build_gaze_repo)


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory, gaze_repo) -> Path:
    """gaze_repo plus an uninterrupted `dvc repro adversarial@gaze`: the reference run. Read-only."""

    def build(work: Path) -> None:
        work.rmdir()
        copy_tree(gaze_repo, work)
        dvc(work, "repro", "adversarial@gaze")

    return _shared(tmp_path_factory, "faults-gaze-trained", build)


@pytest.fixture
def repo(gaze_repo, tmp_path) -> Path:
    return copy_tree(gaze_repo, tmp_path / "repo")


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    """A child in its own process group, so a SIGKILL reaches everything it started."""
    return subprocess.Popen(
        [str(a) for a in args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = TIMEOUT, interval: float = 0.02):
    """Poll until predicate() is truthy; fail if the process exits first (the fault came too late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"process ended (exit {proc.returncode}) before the fault could be injected:\n{out[-2000:]}\n{err[-2000:]}"
            )
        time.sleep(interval)
    kill_group(proc)
    raise AssertionError("timed out waiting for the process to reach the fault point")
