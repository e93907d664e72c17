"""The `simgan` Prefect flow: one task per DVC stage, DVC deciding and versioning everything.

The stages and their order come from dvc.yaml through DVC (flows/dvc_graph.py). One
status query asks DVC which stages changed; the selected stages that changed, and those
downstream of them, run one at a time as `dvc repro --single-item <stage>` in an order where
each follows its inputs. They run one at a time because `dvc repro` holds a repo-wide lock: two
stages at once would fail on it. A lock held by someone else (another `dvc` in the same
checkout), when the flow starts or while it runs, fails the status query or the stage task, and
its retries, with exponential back-off, try again.

Every stage is a task run named like the stage, whose result holds its output hashes from
dvc.lock: a `dvc-stage` task that runs it, or a `dvc-up-to-date` task that records that DVC found it
up to date. That result is persisted as JSON in Prefect's result storage, under a key of its own
task run (RESULT_KEY), so it is never a cache hit and never makes Prefect skip a stage, and is
shown on the task run's page as a `result` artifact. At the end the flow publishes artifacts: the
results table (reports/results.md), a table of every metric, the figures, the stage table and the
metric diff against the previous commit (`simgan compare HEAD~1`); the figures are embedded as
data: URIs, which the Prefect UI shows inline.

A flow run whose process dies (kill -9, out of memory) or is cancelled cannot end its own task
runs. Its hooks (`on_crashed`, `on_cancellation`), which the serve process or worker runs once it
sees the process gone, stop the `dvc` commands the run left behind and end every unfinished task
run as Crashed (or Cancelled), so that none stays Running.

Params overrides (`params={"refine.batch_size": 128}`) go through `dvc exp run -S`: DVC writes
them into params.yaml, runs the selected stages and records the run as an experiment
(`dvc exp show`); then the stages run as one task. Refinement fans out over Dask when the flow
is given `dask_address` or `dask_workers` (docs/scale.md).

Run without a server or deployment: `python -m flows.pipeline [--targets 'refine@*' ...]`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

import flows  # noqa: F401  (offline settings before Prefect loads)
from flows.dvc_graph import Graph, load_graph, lock_outs

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
REFINE_PREFIX = "refine@"
# Set in the environment of every command a flow run starts, so that its hooks can find and stop
# them once the flow-run process is gone (_stop_commands).
FLOW_RUN_ENV = "SIMGAN_FLOW_RUN_ID"
# Where each stage task's result (its output hashes) is persisted, as JSON, in Prefect's result
# storage (PREFECT_LOCAL_STORAGE_PATH, default ~/.prefect/storage, or the block
# PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK names). The key is the task run's own, so no other task run
# can find it: the result is written and read back (UI, `state.result()`, later runs) but is never a
# cache hit, and a stage DVC finds changed always runs. (NO_CACHE would persist nothing: it gives no
# key to write under.)
RESULT_KEY = "simgan/{flow_run.id}/{parameters[stage]}.{task_run.id}.json"
PERSISTED = dict(cache_policy=None, persist_result=True, result_serializer="json", result_storage_key=RESULT_KEY)
# Figures go into the markdown artifacts as data: URIs, which both Prefect UIs (v2, the default, and
# v1) show inline; a file:// link is not opened from the UI's http:// page. Larger images are named
# but not embedded.
IMAGE_MAX_KB = int(os.environ.get("SIMGAN_ARTIFACT_IMAGE_MAX_KB", "2048"))
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


def _env() -> dict:
    env = dict(os.environ)
    # stage commands are `python -m stages...`: the interpreter running this flow must be first
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    if runtime.flow_run.id:
        env[FLOW_RUN_ENV] = str(runtime.flow_run.id)
    return env


def stream(cmd: list[str], cwd: Path, logger) -> float:
    """Run `cmd`, every output line into `logger` as it comes; raise on a non-zero exit.
    Returns the seconds it took. The command runs in a process group of its own, which is stopped
    once the command has exited, so that a `dvc repro` killed mid-stage (out of memory, kill -9)
    fails its task at once: its stage command would otherwise hold the output pipe, and this
    task, open until that command ended."""
    logger.info("$ %s", " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    reaper = threading.Thread(target=_stop_group_after_exit, args=(proc,), daemon=True)
    reaper.start()
    tail: list[str] = []
    try:
        for line in proc.stdout:
            line = line.rstrip("\n").rsplit("\r", 1)[-1]  # a progress bar's last state only
            if line.strip():
                logger.info(line)
                tail = (tail + [line])[-20:]
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed with exit status {rc}:\n" + "\n".join(tail[-8:]))
    return time.perf_counter() - t0


def _stop_group_after_exit(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Once `proc` has exited, stop what is left of its process group."""
    proc.wait()
    _stop_groups({proc.pid}, grace_s)


def _results(repo: Path, stages: list[str], status: str, seconds: float = 0.0) -> list[dict]:
    outs = lock_outs(repo)
    return [{"stage": s, "status": status, "seconds": round(seconds, 2), "outs": outs.get(s, {})} for s in stages]


def _show_result(result: dict) -> dict:
    """Record a stage task's result where the UI shows it: a `result` artifact of the task run (the
    task run's page, "Result"), naming the persisted result's key. Returns `result`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    key = RESULT_KEY.format(flow_run=runtime.flow_run, task_run=runtime.task_run, parameters={"stage": result["stage"]})
    rows = "\n".join(f"| `{path}` | `{md5}` |" for path, md5 in result["outs"].items())
    description = f"`{result['stage']}`: {result['status']}; output hashes (dvc.lock), persisted as `{key}`" + (
        f"\n\n| output | hash |\n|---|---|\n{rows}" if rows else ""
    )
    artifact = ArtifactCreate(
        type="result",
        description=description,
        data={**result["outs"], "storage_key": key},
        task_run_id=runtime.task_run.id,
        flow_run_id=runtime.flow_run.id,
    )
    try:
        with get_client(sync_client=True) as client:
            client.create_artifact(artifact)
    except Exception as e:  # the UI's view of it only: the stage itself has run, and its result stands
        get_run_logger().warning("%s: no result artifact: %s", result["stage"], e)
    return result


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=exponential_backoff(10), **PERSISTED)
def run_stage(stage: str, repo: str, force: bool = False) -> dict:
    """`dvc repro --single-item [--force] <stage>`."""
    root = Path(repo)
    logger = get_run_logger()
    seconds = stream([*DVC, "repro", "--single-item", *(["--force"] if force else []), stage], root, logger)
    return _show_result(_results(root, [stage], "ran", seconds)[0])


@task(name="dvc-up-to-date", task_run_name="{stage}", **PERSISTED)
def up_to_date(stage: str, outs: dict[str, str]) -> dict:
    """A stage DVC found up to date: nothing runs; its output hashes from dvc.lock."""
    return _show_result({"stage": stage, "status": "up to date", "seconds": 0.0, "outs": outs})


def _lock_held(task, task_run, state) -> bool:
    """Retry only while another DVC process holds the repository's lock; any other error stands."""
    from dvc.lock import LockError

    return isinstance(state.result(raise_on_failure=False), LockError)


@task(
    name="dvc-status",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=exponential_backoff(10),
    retry_condition_fn=_lock_held,
)
def dvc_status(repo: str, status: bool) -> tuple[Graph, set[str]]:
    """The graph of dvc.yaml and, with `status`, the stages DVC finds changed. `dvc status` takes
    the repository's lock (DVC gives up after 3 s), so another `dvc` running here fails it."""
    return load_graph(repo, status=status)


@task(
    name="dvc-commit",
    task_run_name="commit {stage}",
    retries=2,
    retry_delay_seconds=exponential_backoff(10),
    **PERSISTED,
)
def commit_stage(stage: str, repo: str) -> dict:
    """Record outputs made outside `dvc repro` (the Dask refinement) in dvc.lock and the cache."""
    seconds = stream([*DVC, "commit", "--force", stage], Path(repo), get_run_logger())
    return _show_result(_results(Path(repo), [stage], "ran (dask)", seconds)[0])


@task(name="dvc-exp-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def exp_run(stages: list[str], repo: str, params: dict[str, Any], force: bool) -> float:
    sets = []
    for key, value in params.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()
        sets += ["-S", f"{key}={text}"]
    cmd = [*DVC, "exp", "run", *sets, "--single-item", *(["--force"] if force else []), *stages]
    return stream(cmd, Path(repo), get_run_logger())


@task(name="refine-shard", task_run_name="{stage}[{start}:{stop}]", cache_policy=NO_CACHE)
def refine_shard_task(
    stage: str, src: str, shard_path: str, refiner: str, start: int, stop: int, threads: int | None, kwargs: dict
) -> str:
    from simgan.distributed import refine_shard

    return refine_shard(src, shard_path, refiner, start, stop, threads=threads, **kwargs)


@flow(name="simgan-refine-sharded", flow_run_name="refine {stage} on dask")
def refine_on_dask(stage: str, repo: str, shards: int | None, threads: int | None) -> int:
    """The refine stage's outputs (one refined set per replicate) computed shard by shard on the
    flow's Dask task runner; every replicate's shards are submitted at once."""
    from simgan.config import Params, seeds_param
    from simgan.distributed import combine_shards, shard_dir, shard_jobs
    from simgan.refine import refine_settings

    p = Params.load(Path(repo) / "params.yaml")
    task = stage.removeprefix(REFINE_PREFIX)
    total = 0
    with contextlib.ExitStack() as stack:
        pending = []
        for seed in seeds_param(p):
            s = refine_settings(p, task, seed, repo)
            src, dst, refiner = s.pop("src"), s.pop("dst"), s.pop("refiner")
            jobs = shard_jobs(src, dst, shards or 8, stack.enter_context(shard_dir(dst)))
            futures = [
                refine_shard_task.submit(stage=stage, refiner=refiner, threads=threads, kwargs=s, **job) for job in jobs
            ]
            pending.append((dst, jobs, futures))
        for dst, jobs, futures in pending:
            n = combine_shards([f.result() for f in futures], dst)
            get_run_logger().info("%s: %d rows in %d shards -> %s", stage, n, len(jobs), dst)
            total += n
    return total


def _dask_runner(address: str | None, workers: int):
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs=dict(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ),
    )


def select(graph: Graph, task: str | None, targets: list[str] | None) -> list[str]:
    if not task:
        return graph.select(targets)
    wanted = graph.with_upstream(f"evaluate@{task}") | {"report"} | (set(graph.select(targets)) if targets else set())
    return [s for s in graph.order if s in wanted]


def _blocked(graph: Graph, stage: str, selected: set[str], blocked: set[str], repo: Path) -> str | None:
    """Why `stage` cannot run: an unselected upstream stage's output is missing, or an upstream
    stage was blocked. None when it can run."""
    for up in sorted(graph.upstream[stage]):
        if up in blocked:
            return f"upstream {up} blocked"
        if up not in selected:
            missing = [o for o in graph.outs[up] if not (repo / o).exists()]
            if missing:
                return f"needs {missing[0]} from {up}, which this run does not include"
    return None


def _data_uri(path: Path) -> str | None:
    """The image at `path` as a data: URI; None when it is missing, not an image, or over
    IMAGE_MAX_KB."""
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if not kind or not path.is_file() or path.stat().st_size > IMAGE_MAX_KB * 1024:
        return None
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def embed_images(markdown: str, base: Path) -> str:
    """`markdown` with its images at relative paths (from `base`) embedded as data: URIs; an image
    that cannot be embedded becomes its alt text and path. (A relative link resolves against the
    UI's own address and shows nothing.)"""

    def embed(m: re.Match) -> str:
        alt, src = m.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:", src, re.I):  # http:, data: ...: the browser can load it
            return m[0]
        uri = _data_uri(base / src)
        return f"![{alt}]({uri})" if uri else f"*{alt}* (`{src}`, not embedded)"

    return _MD_IMAGE.sub(embed, markdown)


def figures_markdown(root: Path, figures: list[str]) -> str:
    """Every figure as a heading and the image itself, embedded (data: URI)."""
    parts = []
    for f in figures:
        uri = _data_uri(root / f)
        if uri:
            body = f"![{f}]({uri})"
        elif (root / f).suffix.lower() in IMAGE_TYPES:
            body = (
                f"{(root / f).stat().st_size / 1024:.0f} KB, over the {IMAGE_MAX_KB} KB embedding limit "
                "(SIMGAN_ARTIFACT_IMAGE_MAX_KB): open it in the checkout."
            )
        else:
            body = "not a PNG, JPEG or GIF, so not embedded: open it in the checkout."
        parts.append(f"### {f}\n\n{body}")
    return "\n\n".join(parts)


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish(repo: str, figure_paths: list[str], results: list[dict]) -> None:
    root = Path(repo)
    create_table_artifact(
        key="simgan-stages",
        table=[{**r, "outs": json.dumps(r["outs"])} for r in results],
        description="Stage, what the run did with it, seconds, output hashes (dvc.lock)",
    )
    results_md = root / "reports" / "results.md"
    if results_md.exists():
        create_markdown_artifact(
            key="simgan-results",
            markdown=embed_images(results_md.read_text(), results_md.parent),
            description="reports/results.md, its figures embedded",
        )
    rows = []
    for path in sorted((root / "metrics").glob("*.json")):
        m = json.loads(path.read_text())
        for row, cells in (m.get("rows") or {}).items():
            for metric, cell in cells.items():
                if isinstance(cell, dict) and "mean" in cell:
                    rows.append(
                        {"task": path.stem, "row": row, "metric": metric, "mean": cell["mean"], "std": cell.get("std")}
                    )
    if rows:
        create_table_artifact(key="simgan-metrics", table=rows, description="metrics/*.json: mean and std over seeds")
    figures = [f for f in figure_paths if (root / f).exists()]
    if figures:
        create_markdown_artifact(
            key="simgan-figures",
            description="figures written by the pipeline, embedded",
            markdown=figures_markdown(root, figures),
        )


@task(name="compare-previous", cache_policy=NO_CACHE)
def compare(repo: str, rev: str) -> str:
    """The metric diff of the workspace against `rev` (`simgan compare`), as markdown."""
    root = Path(repo)
    r = subprocess.run(
        [sys.executable, "-m", "simgan.cli", "compare", rev, "--repo", str(root)],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode in (0, 1) and r.stdout.strip():
        return r.stdout
    return f"`simgan compare {rev}` gave no report (exit {r.returncode}):\n\n```\n{r.stderr.strip()[-2000:]}\n```"


def _stop_commands(flow_run_id: str, grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then after `grace_s` SIGKILL, the process group of every command the flow run
    started (its environment holds FLOW_RUN_ENV; Linux /proc), so no `dvc repro` keeps running,
    and holding DVC's lock, for a run that has ended. Returns the process groups signalled."""
    marker = f"{FLOW_RUN_ENV}={flow_run_id}".encode()
    groups = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                groups.add(os.getpgid(int(proc.name)))
        except (OSError, ValueError):  # gone, or not ours to read
            continue
    groups.discard(os.getpgrp())  # run in the flow-run process itself: its commands only
    found = sorted(groups)
    _stop_groups(groups, grace_s)
    return found


def _stop_groups(groups: set[int], grace_s: float) -> None:
    """SIGTERM every process group, then after `grace_s` SIGKILL those still alive."""
    deadline = time.monotonic() + grace_s
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for group in groups:
            try:
                os.killpg(group, sig)
                alive.add(group)
            except ProcessLookupError:  # the group is empty: nothing left behind
                pass
        while sig == signal.SIGTERM and alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = {g for g in alive if _group_alive(g)}
        groups = alive


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def end_unfinished_runs(flow, flow_run, state) -> None:
    """on_crashed / on_cancellation hook: stop the run's commands, then end every task run of this
    flow run and of its subflow runs (the Dask refinement) that is not final, as Crashed or
    Cancelled like the flow run. Prefect itself leaves them Running when the process died."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import TERMINAL_STATES, StateType
    from prefect.logging.loggers import flow_run_logger
    from prefect.states import Cancelled, Crashed

    stopped = _stop_commands(str(flow_run.id))
    end = Cancelled if state.is_cancelling() or state.is_cancelled() else Crashed
    message = f"flow run {flow_run.name} ended {state.name}: {state.message or 'no message'}"
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]))
        )
        for child in children:
            if not child.state or not child.state.is_final():
                client.set_flow_run_state(child.id, end(message=message), force=True)
        unfinished = [t for t in StateType if t not in TERMINAL_STATES]
        ended = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id, *(c.id for c in children)])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))),
        )
        for r in ended:
            client.set_task_run_state(r.id, end(message=message), force=True)
    flow_run_logger(flow_run, flow).info(
        "%s: ended %d unfinished task runs as %s%s",
        state.name,
        len(ended),
        end.__name__,
        f"; stopped the process groups {stopped} of its commands" if stopped else "",
    )


@flow(name="simgan", log_prints=True, on_crashed=[end_unfinished_runs], on_cancellation=[end_unfinished_runs])
def simgan(
    task: str | None = None,
    targets: list[str] | None = None,
    force: bool = False,
    params: dict[str, Any] | None = None,
    repo: str | None = None,
    dask_address: str | None = None,
    dask_workers: int = 0,
    shards: int | None = None,
    retries: int = 2,
    retry_delay_s: float = 10.0,
    compare_rev: str | None = "HEAD~1",
) -> list[dict]:
    """Run the DVC pipeline's stages through DVC: those of `task` (gaze | hand: the stages
    `evaluate@<task>` needs, and `report`), those matching the fnmatch patterns `targets`, or
    without either, all of them.

    force: rerun the selected stages even if DVC finds them up to date. params: dotted keys to
    override via `dvc exp run -S`. dask_address / dask_workers: refine on that Dask scheduler, or
    on a LocalCluster of that many processes; shards: row shards per refine stage (default 8).
    retries / retry_delay_s: for DVC's status query and per stage, exponential back-off from
    retry_delay_s. compare_rev: the revision the metrics are compared with (None: no comparison)."""
    logger = get_run_logger()
    root = Path(repo or ROOT).resolve()
    t0 = time.perf_counter()
    # Started before DVC's status is known and kept only if no stage runs: on an up-to-date
    # workspace the comparison then costs no extra time.
    early = compare.submit(str(root), compare_rev) if compare_rev and not params else None
    backoff = {"retries": retries, "retry_delay_seconds": exponential_backoff(retry_delay_s)}
    graph, changed = dvc_status.with_options(**backoff)(str(root), status=not params)
    selected = select(graph, task, targets)
    stage_task, commit_task = run_stage.with_options(**backoff), commit_stage.with_options(**backoff)
    results: list[dict] = []
    if params:
        seconds = exp_run(selected, str(root), params, force)
        results = _results(root, selected, "ran (exp run)", seconds)
    else:
        stale = graph.stale(selected, changed, force)
        logger.info(
            "DVC: %d of %d selected stages to run: %s",
            len(stale),
            len(selected),
            ", ".join(s for s in selected if s in stale) or "none",
        )
        blocked: set[str] = set()
        chosen = set(selected)
        # Up-to-date stages run nothing: one task run each, named like the stage, submitted
        # together; dvc.lock is read once, before any stage runs, so while no DVC writes it.
        lock = lock_outs(root)
        fresh_stages = [s for s in selected if s not in stale]
        fresh = {r["stage"]: r for r in up_to_date.map(fresh_stages, [lock.get(s, {}) for s in fresh_stages]).result()}
        for stage in selected:
            if stage in fresh:
                results.append(fresh[stage])
                continue
            why = _blocked(graph, stage, chosen, blocked, root) if stage in stale else None
            if why:
                logger.warning("%s: skipped: %s", stage, why)
                blocked.add(stage)
                results.append({"stage": stage, "status": f"blocked: {why}", "seconds": 0.0, "outs": {}})
            elif stage in stale and stage.startswith(REFINE_PREFIX) and (dask_address or dask_workers):
                runner = _dask_runner(dask_address, dask_workers)
                refine_on_dask.with_options(task_runner=runner)(stage, str(root), shards, None if dask_address else 1)
                results.append(commit_task(stage, str(root)))
            else:
                results.append(stage_task(stage, str(root), force))
    publish(str(root), [o for s in graph.order for o in graph.outs[s] if o.endswith(".png")], results)
    if compare_rev:
        workspace_changed = any(not r["status"].startswith(("up to date", "blocked")) for r in results)
        diff = compare(str(root), compare_rev) if workspace_changed or early is None else early.result()
        create_markdown_artifact(
            key="simgan-compare", markdown=diff, description=f"metrics and params vs {compare_rev}"
        )
    ran = sum(r["status"].startswith("ran") for r in results)
    logger.info(
        "simgan: %d stages ran, %d up to date, %d blocked in %.1f s",
        ran,
        sum(r["status"] == "up to date" for r in results),
        sum(r["status"].startswith("blocked") for r in results),
        time.perf_counter() - t0,
    )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description="run the simgan flow once, here")
    ap.add_argument("--task", choices=("gaze", "hand"), default=None, help="one task's stages and report")
    ap.add_argument("--targets", nargs="*", default=None, help="fnmatch patterns of stage names (default: all)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override (dvc exp run -S)")
    ap.add_argument("--repo", default=None)
    ap.add_argument("--dask-address", default=None)
    ap.add_argument("--dask-workers", type=int, default=0)
    ap.add_argument("--shards", type=int, default=None)
    ap.add_argument("--retry-delay-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    state = simgan(
        task=args.task,
        targets=args.targets,
        force=args.force,
        params=overrides or None,
        repo=args.repo,
        dask_address=args.dask_address,
        dask_workers=args.dask_workers,
        shards=args.shards,
        retry_delay_s=args.retry_delay_s,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
