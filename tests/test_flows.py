"""The Prefect flow with real components: a real `prefect server` on a free loopback port with a
temporary PREFECT_HOME, real `dvc`, deployments served by `python -m flows.serve` or picked up by
a process-pool worker from prefect.yaml, runs started with `prefect deployment run ... --watch`.
Everything started here is stopped by process group, also when a test fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One Prefect server (the `prefect` fixture) for every test here, on one xdist worker (`--dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def background(cmd: list[str], cwd: Path, env: dict, log: Path):
    """A process in its own group, stopped with its children on exit (SIGTERM, then SIGKILL)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


def _wait_for(check, timeout: float, what: str, log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(1)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{log.read_text()[-3000:]}" if log else "")
    )


def _run(args, cwd, env, timeout=1200, check=True):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="session")  # not module: xdist interleaves other modules, which tore it down
def prefect(tmp_path_factory):
    """A Prefect server for this module; yields the environment that points clients at it."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    env = dict(
        os.environ,
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        DVC_NO_ANALYTICS="1",
        PREFECT_CLI_PROMPT="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""),
    )
    env.pop("PREFECT_PROFILE", None)
    log = home / "server.log"

    def healthy():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    with background(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], home, env, log
    ):
        _wait_for(healthy, 300, "prefect server", log)
        yield env


def _git_commit(repo: Path, env: dict, message: str):
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", message], repo, env)


def _copy_repo(dst: Path, env: dict, tiny: bool) -> Path:
    """The working tree as a clone has it, committed; with `tiny`, the tiny profile as a second
    commit (so `simgan compare HEAD~1` has a previous revision)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)
    for d in ("metrics", "plots", "reports"):
        shutil.rmtree(dst / d, ignore_errors=True)
    _run(["git", "init", "-q"], dst, env)
    _git_commit(dst, env, "copy")
    if tiny:
        _run([sys.executable, "-m", "simgan.cli", "params", "apply", "profiles/tiny.yaml"], dst, env)
        _git_commit(dst, env, "tiny profile")
    return dst


def _artifact(env: dict, key: str, cwd: Path) -> list[dict]:
    r = _run([str(BIN / "prefect"), "artifact", "inspect", key, "--limit", "1", "-o", "json"], cwd, env)
    return json.loads(r.stdout)


def _latest_artifact(env: dict, key: str) -> dict:
    """The newest artifact of `key`, from the REST API (the CLI's output goes through Rich, whose
    markup eats markdown such as `![alt](...)`)."""
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    return _api(env, "POST", "/artifacts/filter", body)[0]


def _stage_statuses(env: dict, cwd: Path) -> dict[str, str]:
    data = _artifact(env, "simgan-stages", cwd)[0]["data"]
    rows = json.loads(data) if isinstance(data, str) else data
    return {row["stage"]: row["status"] for row in rows}


def _api(env: dict, method: str, path: str, body: dict | None = None):
    """The Prefect server's REST API, as the UI reads it."""
    req = urllib.request.Request(
        env["PREFECT_API_URL"] + path,
        method=method,
        headers={"Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode(),
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _task_runs(env: dict, flow_run_id: str) -> list[dict]:
    return _api(env, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def _flow_run_id(cli_output: str) -> str:
    return re.search(r"UUID: ([0-9a-f-]{36})", cli_output)[1]


def _toy_repo(path: Path, env: dict, files: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    _run(["git", "init", "-q"], path, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], path, env)
    _git_commit(path, env, "toy")
    return path


def _deployment_exists(env, cwd, name):
    return lambda: (
        subprocess.run(
            [str(BIN / "prefect"), "deployment", "inspect", name], cwd=cwd, env=env, capture_output=True
        ).returncode
        == 0
    )


def test_served_full_run_on_tiny_profile_then_nothing_to_do(prefect, tmp_path):
    env = prefect
    repo = _copy_repo(tmp_path / "repo", env, tiny=True)
    with background([sys.executable, "-m", "flows.serve", "--poll", "1"], repo, env, tmp_path / "serve.log"):
        _wait_for(_deployment_exists(env, repo, "simgan/full"), 300, "served deployments", tmp_path / "serve.log")
        for name in ("simgan/gaze", "simgan/hand"):
            assert _deployment_exists(env, repo, name)()
        # the first run refines on a 2-process Dask LocalCluster through prefect-dask
        first = _run(
            [
                str(BIN / "prefect"),
                "deployment",
                "run",
                "simgan/full",
                "--watch",
                "--params",
                json.dumps({"dask_workers": 2, "shards": 2}),
            ],
            repo,
            env,
            timeout=2400,
            check=False,
        )
        assert first.returncode == 0, first.stdout[-4000:] + (tmp_path / "serve.log").read_text()[-6000:]
        statuses = _stage_statuses(env, repo)
        assert len(statuses) == 32 and all(s.startswith("ran") for s in statuses.values()), statuses
        assert statuses["refine@gaze"] == statuses["refine@hand"] == "ran (dask)"
        for task in ("gaze", "hand"):
            m = json.loads((repo / "metrics" / f"{task}.json").read_text())
            assert m["profile"] == "tiny" and m["rows"]
        assert (repo / "reports" / "results.md").stat().st_size > 0
        # the Dask-refined outputs were committed: DVC finds the whole pipeline up to date
        status = _run([sys.executable, "-m", "dvc", "status"], repo, env).stdout
        assert "up to date" in status, status
        for key in ("simgan-results", "simgan-metrics", "simgan-figures", "simgan-compare"):
            assert _artifact(env, key, repo), key
        assert "|" in _artifact(env, "simgan-compare", repo)[0]["data"]
        figures = _latest_artifact(env, "simgan-figures")["data"]
        assert figures.count("](data:image/png;base64,") == figures.count("### ") >= 6 and "file://" not in figures

        lock = (repo / "dvc.lock").read_bytes()
        t0 = time.perf_counter()
        again = _run([str(BIN / "prefect"), "deployment", "run", "simgan/full", "--watch"], repo, env, timeout=900)
        flow_s = time.perf_counter() - t0
        assert set(_stage_statuses(env, repo).values()) == {"up to date"}, again.stdout[-3000:]
        assert (repo / "dvc.lock").read_bytes() == lock
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    dvc_s = time.perf_counter() - t0
    print(
        f"\nup-to-date run: prefect deployment run --watch {flow_s:.1f} s, dvc repro {dvc_s:.1f} s, "
        f"added {flow_s - dvc_s:.1f} s (load average {os.getloadavg()[0]:.1f})"
    )


TOY_DVC_YAML = """\
stages:
  make:
    cmd: python -c "open('a.txt', 'w').write('a')"
    outs: [a.txt]
  flaky:
    cmd: python flaky.py
    deps: [a.txt, flaky.py]
    outs: [b.txt]
"""

# Fails on its first attempt (a marker outside the repository remembers it), then succeeds.
TOY_FLAKY = """\
import os, sys
attempts = os.environ["TOY_ATTEMPTS"]
with open(attempts, "a") as f:
    f.write("attempt\\n")
if open(attempts).read().count("attempt") == 1:
    sys.exit("flaky: failing on purpose the first time")
open("b.txt", "w").write(open("a.txt").read() + "b")
"""


def test_dvc_lock_held_when_the_flow_starts_is_retried(prefect, tmp_path):
    """Another DVC process holds the lock as the flow starts: its status query fails, and retries
    with back-off until the lock is free (was: the flow failed at once)."""
    import zc.lockfile

    env = dict(prefect, TOY_ATTEMPTS=str(tmp_path / "attempts.txt"))
    toy = _toy_repo(tmp_path / "toy", env, {"dvc.yaml": TOY_DVC_YAML.split("  flaky:")[0]})
    log = tmp_path / "flow.log"
    holder = zc.lockfile.LockFile(str(toy / ".dvc" / "tmp" / "lock"))
    cmd = [sys.executable, "-m", "flows.pipeline", "--repo", str(toy), "--retry-delay-s", "2"]
    with background(cmd, ROOT, env, log) as proc:
        try:
            _wait_for(
                lambda: "Unable to acquire lock" in log.read_text() or proc.poll() is not None,
                600,
                "the flow's first status query",
                log,
            )
        finally:
            holder.close()
        rc = proc.wait(600)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert re.search(r"LockError.*Retry 1/2 will start 2", text), text[-4000:]
    assert (toy / "a.txt").read_text() == "a"


SLOW_DVC_YAML = """\
stages:
  slow:
    cmd: python slow.py
    deps: [slow.py]
    outs: [slow.txt]
"""

# Records its pid, then runs for minutes.
SLOW_STAGE = """\
import os, time
with open(os.environ["TOY_PIDS"] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(os.environ["TOY_PIDS"] + ".tmp", os.environ["TOY_PIDS"])
time.sleep(600)
open("slow.txt", "w").write("done")
"""


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _dvc_repro_above(pid: int) -> int:
    """The `dvc repro` process that started the stage command `pid`. DVC runs the command through
    $SHELL: bash execs it, so its parent is dvc; /bin/sh (dash, where SHELL is unset, as in CI)
    forks, so a shell sits between them."""
    while pid > 1:
        pid = _ppid(pid)
        if b"repro" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise AssertionError("no dvc repro above the stage command")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_killed_flow_run_leaves_no_task_running(prefect, tmp_path):
    """kill -9 of the flow-run process mid-stage: the serve process reports the run Crashed and
    runs its on_crashed hook, which ends the stage's task run (was: Running for ever) and stops
    the `dvc repro` and stage command the dead process left behind."""
    env = dict(prefect, TOY_PIDS=str(tmp_path / "pids"))
    code = _copy_repo(tmp_path / "code", env, tiny=False)
    toy = _toy_repo(tmp_path / "toy", env, {"dvc.yaml": SLOW_DVC_YAML, "slow.py": SLOW_STAGE})
    prefect_cli = str(BIN / "prefect")
    serve_log = tmp_path / "serve.log"
    with background([sys.executable, "-m", "flows.serve", "--poll", "1"], code, env, serve_log):
        _wait_for(_deployment_exists(env, code, "simgan/full"), 300, "served deployments", serve_log)
        r = _run(
            [
                prefect_cli,
                "deployment",
                "run",
                "simgan/full",
                "--params",
                json.dumps({"repo": str(toy), "compare_rev": None}),
            ],
            code,
            env,
        )
        flow_run = _flow_run_id(r.stdout)
        _wait_for((tmp_path / "pids").exists, 600, "the slow stage to start", serve_log)
        stage_pid = int((tmp_path / "pids").read_text())
        dvc_pid = _dvc_repro_above(stage_pid)
        flow_pid = _ppid(dvc_pid)
        _wait_for(
            lambda: any(t["name"] == "slow" and t["state_type"] == "RUNNING" for t in _task_runs(env, flow_run)),
            120,
            "the slow task run to be RUNNING",
            serve_log,
        )
        os.kill(flow_pid, signal.SIGKILL)
        _wait_for(
            lambda: _api(env, "GET", f"/flow_runs/{flow_run}")["state_type"] == "CRASHED",
            300,
            "the flow run to be reported CRASHED",
            serve_log,
        )
        _wait_for(
            lambda: all(
                t["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for t in _task_runs(env, flow_run)
            ),
            120,
            "every task run to end",
            serve_log,
        )
        _wait_for(lambda: not _alive(stage_pid), 120, "the stage command to be stopped", serve_log)
    runs = {t["name"]: t["state_type"] for t in _task_runs(env, flow_run)}
    assert runs["slow"] == "CRASHED", runs
    assert not _alive(dvc_pid)
    assert not (toy / "slow.txt").exists()


def test_worker_from_prefect_yaml_retries_a_failing_stage(prefect, tmp_path):
    env = dict(prefect, TOY_ATTEMPTS=str(tmp_path / "attempts.txt"))
    code = _copy_repo(tmp_path / "code", env, tiny=False)
    toy = _toy_repo(tmp_path / "toy", env, {"dvc.yaml": TOY_DVC_YAML, "flaky.py": TOY_FLAKY})

    prefect_cli = str(BIN / "prefect")
    _run([prefect_cli, "work-pool", "create", "simgan-pool", "--type", "process"], code, env)
    _run([prefect_cli, "work-pool", "set-concurrency-limit", "simgan-pool", "1"], code, env)
    _run([prefect_cli, "deploy", "--all"], code, env)
    params = {"repo": str(toy), "retry_delay_s": 0.5, "compare_rev": None}
    with background([prefect_cli, "worker", "start", "--pool", "simgan-pool"], code, env, tmp_path / "worker.log"):
        r = _run(
            [prefect_cli, "deployment", "run", "simgan/full", "--watch", "--params", json.dumps(params)],
            code,
            env,
            timeout=900,
            check=False,
        )
        assert r.returncode == 0, r.stdout[-3000:] + (tmp_path / "worker.log").read_text()[-6000:]
        assert (tmp_path / "attempts.txt").read_text().count("attempt") == 2  # failed once, retried once
        assert (toy / "b.txt").read_text() == "ab"
        assert _stage_statuses(env, code) == {"make": "ran", "flaky": "ran"}
        r = _run(
            [prefect_cli, "deployment", "run", "simgan/full", "--watch", "--params", json.dumps(params)],
            code,
            env,
            timeout=900,
        )
        assert _stage_statuses(env, code) == {"make": "up to date", "flaky": "up to date"}
        # one task run per up-to-date stage, named like the stage (was: one for all)
        stage_runs = [t for t in _task_runs(env, _flow_run_id(r.stdout)) if t["task_key"].startswith("up_to_date")]
        assert sorted((t["name"], t["state_type"]) for t in stage_runs) == [
            ("flaky", "COMPLETED"),
            ("make", "COMPLETED"),
        ]
    assert (tmp_path / "attempts.txt").read_text().count("attempt") == 2


def test_a_killed_command_fails_its_task_at_once_and_leaves_nothing_running(tmp_path, monkeypatch):
    """The command (`dvc repro` in a flow) dies by SIGKILL while a child it started holds the output
    pipe: stream() raises with the exit status in seconds and stops the child (was: the task
    waited for the child, here 120 s; for a stage, the whole stage)."""
    import logging

    monkeypatch.syspath_prepend(str(ROOT))
    from flows.pipeline import stream

    pid_file = tmp_path / "child"
    script = f"sleep 120 & echo $! > {pid_file}; echo started; kill -9 $$"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"failed with exit status -9:\nstarted"):
        stream(["bash", "-c", script], tmp_path, logging.getLogger("test"))
    assert time.monotonic() - t0 < 60
    child = int(pid_file.read_text())
    _wait_for(lambda: not _alive(child), 30, "the child to be stopped")


# A 1x1 PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

FIGURE_DVC_YAML = """\
stages:
  make:
    cmd: python -c "open('a.txt', 'w').write('a')"
    outs: [a.txt]
  plot:
    cmd: python plot.py
    deps: [a.txt, plot.py]
    outs: [reports/fig.png, reports/results.md]
"""

FIGURE_PLOT = f"""\
import base64, os
os.makedirs("reports", exist_ok=True)
open("reports/fig.png", "wb").write(base64.b64decode("{PNG_B64}"))
open("reports/results.md", "w").write("# Results\\n\\n![the figure](fig.png)\\n")
"""

# Reads the stage task runs' results back from Prefect's result storage, as a later run would.
READ_RESULTS = """\
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sys.argv[1]])))
stages = [t for t in runs if t.task_key.startswith(("run_stage", "up_to_date"))]
print(json.dumps({t.name: t.state.result() for t in stages}))
"""


def test_figures_are_embedded_and_stage_results_persisted(prefect, tmp_path):
    """The figures artifacts show the images themselves (data: URIs, which the UI renders; was:
    file:// links a browser will not open from the UI), and each stage task's result, its output
    hashes from dvc.lock, is persisted as JSON and read back (was: not persisted), yet never a
    cache hit: a stage DVC finds changed runs although its task's inputs are those of the run
    before."""
    storage = tmp_path / "results"
    env = dict(prefect, PREFECT_LOCAL_STORAGE_PATH=str(storage))
    toy = _toy_repo(tmp_path / "toy", env, {"dvc.yaml": FIGURE_DVC_YAML, "plot.py": FIGURE_PLOT})
    cmd = [sys.executable, "-m", "flows.pipeline", "--repo", str(toy)]
    _run(cmd, ROOT, env, timeout=900)
    assert _stage_statuses(env, ROOT) == {"make": "ran", "plot": "ran"}
    with open(toy / "plot.py", "a") as f:
        f.write("# changed\n")
    _run(cmd, ROOT, env, timeout=900)
    assert _stage_statuses(env, ROOT) == {"make": "up to date", "plot": "ran"}

    image = f"(data:image/png;base64,{PNG_B64})"
    figures = _latest_artifact(env, "simgan-figures")["data"]
    assert f"![reports/fig.png]{image}" in figures and "file://" not in figures, figures
    assert f"![the figure]{image}" in _latest_artifact(env, "simgan-results")["data"]

    import yaml

    lock = yaml.safe_load((toy / "dvc.lock").read_text())["stages"]
    hashes = {s: {o["path"]: o["md5"] for o in lock[s]["outs"]} for s in ("make", "plot")}
    flow_run = _latest_artifact(env, "simgan-stages")["flow_run_id"]
    r = _run([sys.executable, "-c", READ_RESULTS, flow_run], ROOT, env)
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert {s: (v["status"], v["outs"]) for s, v in results.items()} == {
        "make": ("up to date", hashes["make"]),
        "plot": ("ran", hashes["plot"]),
    }
    # readable JSON files, one per stage task run of the flow run
    files = sorted((storage / "simgan" / flow_run).glob("*.json"))
    assert [f.name.split(".")[0] for f in files] == ["make", "plot"], files
    for f in files:
        assert (
            hashes[f.name.split(".")[0]]["a.txt" if f.name.startswith("make") else "reports/fig.png"] in f.read_text()
        )
    # and the UI's "Result" of each stage task run: its `result` artifact
    for t in _task_runs(env, flow_run):
        if t["name"] in hashes:
            found = _api(
                env,
                "POST",
                "/artifacts/filter",
                {"artifacts": {"task_run_id": {"any_": [t["id"]]}, "type": {"any_": ["result"]}}},
            )
            assert len(found) == 1 and found[0]["data"] | hashes[t["name"]] == found[0]["data"], found
            assert all(md5 in found[0]["description"] for md5 in hashes[t["name"]].values())
