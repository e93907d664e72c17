"""CI guards (.ci/run, `simgan lock-check`) against real git + DVC repositories: a toy pipeline
with a real dvc.lock from a real `dvc repro`, checked in a `git clone` of it, which has the code,
params and committed metrics but no data, like a CI checkout without a DVC remote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simgan import compare as cmp
from simgan.cli import main
from simgan.config import flatten

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    DVC_NO_ANALYTICS="1",
    PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""),
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@t",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@t",
)


def run(repo: Path, *cmd: str, env: dict | None = None) -> str:
    return subprocess.run(
        list(cmd), cwd=repo, env=env or ENV, check=True, capture_output=True, text=True, timeout=600
    ).stdout


def dvc(repo: Path, *args: str) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args)


def commit_all(repo: Path, msg: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", msg)


def clone(src: Path, dst: Path) -> Path:
    """A fresh clone: tracked files only, no DVC cache, no data."""
    run(src.parent, "git", "clone", "-q", str(src), str(dst))
    return dst


# `prepare` reads a raw input git ignores and makes data DVC caches (both absent from a clone);
# `evaluate` reads that data and writes the
# metrics files (committed, as the project's are) from the project's own metrics plus offsets in
# params.yaml, so the CI gates meet the real key names.
TOY_DVC_YAML = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py, raw/input.txt]
    params: [prepare]
    outs: [data/raw.txt]
  evaluate:
    cmd: python evaluate.py
    deps: [evaluate.py, data/raw.txt, templates]
    params: [evaluate]
    metrics:
      - metrics/gaze.json: {cache: false}
      - metrics/hand.json: {cache: false}
"""
TOY_PARAMS = "prepare: {n: 3}\nevaluate: {gaze_error: 0.0, hand_pck: 0.0}\n"
TOY_PREPARE = """\
import os, yaml
n = yaml.safe_load(open("params.yaml"))["prepare"]["n"]
os.makedirs("data", exist_ok=True)
open("data/raw.txt", "w").write("x" * n)
"""
TOY_EVALUATE = """\
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))["evaluate"]
assert open("data/raw.txt").read()
os.makedirs("metrics", exist_ok=True)
gaze, hand = (json.load(open(f"templates/{t}.json")) for t in ("gaze", "hand"))
gaze["rows"]["refined_1x"]["mean_error_deg"]["mean"] += p["gaze_error"]
hand["rows"]["refined_1x"]["pck5_pct"]["mean"] += p["hand_pck"]
for t, m in (("gaze", gaze), ("hand", hand)):
    json.dump(m, open(f"metrics/{t}.json", "w"), indent=1)
"""


@pytest.fixture
def toy(tmp_path) -> Path:
    """A repository whose last commit holds a current dvc.lock (and .ci/run, as the project's)."""
    r = tmp_path / "toy"
    r.mkdir()
    run(r, "git", "init", "-q", "-b", "main")
    dvc(r, "init", "-q")
    (r / "dvc.yaml").write_text(TOY_DVC_YAML)
    (r / ".gitignore").write_text("/raw/\n")
    (r / "raw").mkdir()
    (r / "raw" / "input.txt").write_text("a raw input no stage makes")
    (r / "params.yaml").write_text(TOY_PARAMS)
    (r / "prepare.py").write_text(TOY_PREPARE)
    (r / "evaluate.py").write_text(TOY_EVALUATE)
    (r / "templates").mkdir()
    for task in ("gaze", "hand"):
        shutil.copy(ROOT / "metrics" / f"{task}.json", r / "templates" / f"{task}.json")
    (r / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", r / ".ci" / "run")
    dvc(r, "repro", "-q")
    commit_all(r, "first run")
    return r


def lock_check(repo: Path, capsys) -> tuple[int, str]:
    rc = main(["lock-check", "--repo", str(repo)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def set_param(repo: Path, old: str, new: str) -> None:
    params = repo / "params.yaml"
    assert old in params.read_text()
    params.write_text(params.read_text().replace(old, new))


# --- simgan lock-check ---------------------------------------------------------------------------


def test_clean_clone_passes_with_its_data_missing(toy, tmp_path, capsys):
    c = clone(toy, tmp_path / "clone")
    assert not (c / "data" / "raw.txt").exists() and not (c / "raw").exists()
    rc, out = lock_check(c, capsys)
    assert rc == 0, out
    assert "matches dvc.yaml, params and code for all 2 stages (1 output absent" in out


def test_code_edit_fails_naming_the_stage_and_the_file(toy, tmp_path, capsys):
    c = clone(toy, tmp_path / "clone")
    (c / "evaluate.py").write_text((c / "evaluate.py").read_text() + "# an edit without a rerun\n")
    rc, out = lock_check(c, capsys)
    assert rc == 1
    assert "dvc.lock is stale for 1 of 2 stages" in out
    assert "  evaluate: dep evaluate.py modified" in out.splitlines()


def test_params_edit_fails_naming_the_param(toy, tmp_path, capsys):
    c = clone(toy, tmp_path / "clone")
    set_param(c, "gaze_error: 0.0", "gaze_error: 2.0")
    rc, out = lock_check(c, capsys)
    assert rc == 1
    assert "  evaluate: param evaluate.gaze_error: 0.0 in dvc.lock, 2.0 in params.yaml" in out.splitlines()
    assert "prepare:" not in out


def test_upstream_stage_rerun_alone_is_stale_downstream(toy, tmp_path, capsys):
    # Data absent in the clone, yet the lock itself shows evaluate read another data/raw.txt
    # than the one prepare last made.
    set_param(toy, "n: 3", "n: 4")
    dvc(toy, "repro", "-q", "--single-item", "prepare")
    commit_all(toy, "prepare only")
    rc, out = lock_check(clone(toy, tmp_path / "clone"), capsys)
    assert rc == 1
    assert re.search(
        r"evaluate: dep data/raw.txt is recorded as \w+, but prepare last made \w+ \(dvc.lock\): "
        r"prepare reran, this stage did not",
        out,
    ), out


def test_new_stage_deleted_code_dep_and_changed_command(toy, tmp_path, capsys):
    c = clone(toy, tmp_path / "clone")
    dvc_yaml = (c / "dvc.yaml").read_text().replace("python evaluate.py", "python evaluate.py --fast")
    (c / "dvc.yaml").write_text(
        dvc_yaml + "  report:\n    cmd: python report.py\n    deps: [metrics/gaze.json]\n    outs: [report.md]\n"
    )
    (c / "prepare.py").unlink()
    rc, out = lock_check(c, capsys)
    assert rc == 1
    lines = out.splitlines()
    assert "  prepare: dep prepare.py deleted, and neither a stage makes it nor does git ignore it" in lines
    assert "  evaluate: changed command (dvc.yaml)" in lines
    assert "  report: not in dvc.lock: the stage never ran" in lines


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["lock-check", "--repo", str(tmp_path / "nope")]) == 2
    run(tmp_path, "git", "init", "-q")
    assert main(["lock-check", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"simgan lock-check: error: --repo {tmp_path / 'nope'}: not a directory",
        f"simgan lock-check: error: --repo {tmp_path}: not a DVC repository (no .dvc folder here or above)",
    ]


# --- .ci/run -------------------------------------------------------------------------------------


def ci_run(repo: Path, tmp_path: Path, make_rc: int = 0, lock_gate: str | None = None) -> subprocess.CompletedProcess:
    """`bash .ci/run` in `repo` with a `make` that only reports that it ran, and a .venv/bin/simgan
    that runs this checkout's simgan."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    (shims / "make").write_text(f'#!/bin/sh\necho "make $*: ran"\nexit {make_rc}\n')
    (shims / "make").chmod(0o755)
    simgan = repo / ".venv" / "bin" / "simgan"
    simgan.parent.mkdir(parents=True, exist_ok=True)
    simgan.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m simgan.cli "$@"\n')
    simgan.chmod(0o755)
    env = dict(ENV, PATH=f"{shims}{os.pathsep}{ENV['PATH']}", PYTHONPATH=str(ROOT))
    env.pop("LOCK_GATE", None)
    if lock_gate is not None:
        env["LOCK_GATE"] = lock_gate
    return subprocess.run(
        ["bash", ".ci/run"], cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def rerun_and_commit(repo: Path, msg: str, old: str | None = None, new: str | None = None) -> None:
    if old is not None:
        set_param(repo, old, new)
    dvc(repo, "repro", "-q")
    commit_all(repo, msg)


def test_ci_passes_a_change_within_the_gates_after_make_test(toy, tmp_path):
    rerun_and_commit(toy, "refined 1x 1.0 deg worse: within the gate", "gaze_error: 0.0", "gaze_error: 1.0")
    r = ci_run(clone(toy, tmp_path / "clone"), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert (
        out.index("make test: ran")
        < out.index("== simgan lock-check ==")
        < out.index("== simgan compare HEAD~1 HEAD ==")
    )
    assert out.count("passes (limit") == 7 and "fails (limit" not in out  # 6 gates, realism in both files
    assert "`rows.refined_1x.mean_error_deg.mean` (metrics/gaze.json)" in out


def test_ci_fails_on_a_regression_past_a_gate(toy, tmp_path):
    rerun_and_commit(toy, "refined 1x 2.0 deg worse", "gaze_error: 0.0", "gaze_error: 2.0")
    r = ci_run(clone(toy, tmp_path / "clone"), tmp_path)
    assert r.returncode == 1
    assert re.search(
        r"❌ `rows.refined_1x.mean_error_deg.mean` \(metrics/gaze.json\): [\d.]+ → [\d.]+, worse by 2.0: "
        r"fails \(limit abs 1.5\)",
        r.stdout,
    ), r.stdout
    assert "a --fail-on gate failed" in r.stderr


def test_ci_fails_on_a_stale_lock_before_comparing(toy, tmp_path):
    (toy / "evaluate.py").write_text(toy.joinpath("evaluate.py").read_text() + "# no rerun\n")
    commit_all(toy, "code edit, no rerun")
    r = ci_run(clone(toy, tmp_path / "clone"), tmp_path)
    assert r.returncode == 1
    assert "  evaluate: dep evaluate.py modified" in r.stderr.splitlines()
    assert "== simgan compare" not in r.stdout


def test_ci_with_lock_gate_0_reports_a_stale_lock_without_failing(toy, tmp_path):
    (toy / "evaluate.py").write_text(toy.joinpath("evaluate.py").read_text() + "# no rerun\n")
    commit_all(toy, "code edit, no rerun")
    r = ci_run(clone(toy, tmp_path / "clone"), tmp_path, lock_gate="0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  evaluate: dep evaluate.py modified" in r.stderr.splitlines()
    assert "dvc.lock is stale" in r.stdout and "== simgan compare" in r.stdout


def test_ci_fails_on_a_compare_error_and_on_failing_tests(toy, tmp_path):
    (toy / "metrics" / "hand.json").write_text("{not json")
    dvc(toy, "commit", "-q", "-f", "evaluate")  # a current lock, recording the broken file
    commit_all(toy, "broken metrics")
    dvc(toy, "repro", "-q", "--force", "evaluate")
    commit_all(toy, "fixed")
    c = clone(toy, tmp_path / "clone")
    r = ci_run(c, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr  # was swallowed: `|| echo "(compare failed ...)"`
    assert "simgan compare: error: metrics/hand.json at HEAD~1" in r.stderr and "not valid JSON" in r.stderr
    r = ci_run(c, tmp_path, make_rc=3)
    assert r.returncode == 3 and "== simgan lock-check ==" not in r.stdout


def test_ci_gates_name_metrics_the_project_writes_and_are_documented():
    specs = re.findall(r"--fail-on (\S+)", (ROOT / ".ci" / "run").read_text())
    assert len(specs) == 6
    metrics = {f"metrics/{t}.json": json.loads((ROOT / "metrics" / f"{t}.json").read_text()) for t in ("gaze", "hand")}
    flat = {f: flatten(m) for f, m in metrics.items()}
    docs = (ROOT / "docs" / "compare.md").read_text()
    for spec in specs:
        gate = cmp.parse_gate(spec)
        assert gate.absolute and cmp.direction(gate.key) is not None, spec
        files = [gate.file] if gate.file else list(flat)
        assert all(isinstance(flat[f].get(gate.key), float) for f in files), spec
        assert f"`{spec}`" in docs, spec


def test_tests_of_one_xdist_group_share_a_worker(tmp_path):
    """The suite's expensive session fixtures (test_pipeline's tiny `dvc repro`, test_flows' Prefect
    server) are built once because their modules' tests form one xdist group under the README's
    `pytest -n 2 --dist loadgroup`. pytest 9.2 with pytest-xdist 3.8 dropped the group silently
    (xdist renames nodeids through an attribute pytest 9.2 no longer reads): the tiny repro ran on
    both workers, 4.5 more minutes of CI, and tests that commit in its repository met each other."""
    (tmp_path / "test_grouped.py").write_text(
        "import os, time, pytest\n"
        'pytestmark = [pytest.mark.xdist_group("shared")]\n'
        "@pytest.fixture(scope='session')\n"
        "def worker():\n"
        "    return os.getpid()\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_grouped(worker, i):\n"
        "    time.sleep(0.2)\n"
        "    print('PID', worker)\n"
    )
    (tmp_path / "test_other.py").write_text("def test_a():\n    pass\ndef test_b():\n    pass\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-rA", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    pids = set(re.findall(r"^PID (\d+)$", out.stdout, re.M))
    assert len(pids) == 1, f"one group ran on {len(pids)} workers:\n{out.stdout}"
