"""What every stage shares: params, paths, error handling and thread settings."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from simgan.config import Params, ParamsError, device_param, positive, seeds_param  # noqa: F401  (Params, ParamsError, device_param, seeds_param: re-exported for stages)
from simgan.data.format import Dataset
from simgan.io import SimganError, write_json_atomic
from simgan.layout import data_path  # noqa: F401  (re-exported for stages)
from simgan.parallel import StepBar, map_processes

# The paper's tasks, whose report (stages/report.py) and metrics are fixed; params.yaml's `tasks`
# may add tasks of the user's own images, which are "generic" data and regression estimators.
PAPER_TASKS = ("gaze", "hand")
SOURCES = ("synthetic", "refined", "real")
# A task name becomes a stage suffix and a directory name (data/<task>/, models/<task>/).
TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
TASK_ARG = "TASK (gaze, hand or a key of params.yaml 'tasks')"  # a per-task stage's one argument, in usage lines


def pipeline_tasks(p: Params) -> list[str]:
    """params.yaml's `tasks` (the dvc.yaml foreach), checked: gaze and hand, plus user tasks."""
    tasks = p.get("tasks", dict, default={t: {} for t in PAPER_TASKS})
    if not tasks:  # dvc.yaml would have no per-task stage, and the variants' data files no producer
        raise ParamsError(f"{p.path}: key 'tasks': expected at least one task, got {tasks!r}")
    for name in tasks:
        if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
            raise ParamsError(
                f"{p.path}: key 'tasks.{name}': expected a task name of letters, digits and _ (starting with a letter)"
            )
    return list(tasks)


def check_task(task: str, p: Params | None = None) -> str:
    # Every name is checked, also for gaze and hand: DVC runs no project code of its own, and for a
    # name like '../evil' stops at that task's first stage with "Parameters 'data.../evil' are
    # missing"; a stage DVC runs before it (prepare@gaze of a fresh pipeline) says what is wrong.
    p = p or Params.load()
    names = pipeline_tasks(p)
    if task in PAPER_TASKS:
        return task
    if task not in names:
        raise ParamsError(f"task: expected one of {names} (params.yaml 'tasks'), got {task!r}")
    return task


def data_task(task: str) -> str:
    """The data-format / estimator task of a pipeline task: gaze, hand, or generic for user tasks."""
    return task if task in PAPER_TASKS else "generic"


def read_labels(ds: Dataset, task: str, rows: slice | None = None) -> tuple[np.ndarray, list[str] | None]:
    """The labels an estimator of pipeline task `task` learns (simgan.estimators.read_training_labels):
    gaze vectors / joints, or for a user task its label columns as one (N, K) matrix and the K names."""
    from simgan.estimators import read_training_labels  # torch: only the stages that train or score need it

    return read_training_labels(ds, data_task(task), rows, name=task)


def replicate_seed(base: int, replicate: int) -> int:
    """Replicate `replicate`'s draw of a seeded part of the method: the params.yaml base seed
    (gan.<task>.train.seed, refine.seed) plus the replicate's seed from `seeds`. So replicate 0 of
    base 0 is the draw a single-GAN pipeline made, and replicates never share a GAN draw."""
    return base + replicate


def run_checkpoint(stage: str, task: str, section: dict, replicate: int, *inputs: Path) -> Path:
    """.simgan/checkpoints/<task>-<stage>-seed<k>-<hash>.pt: the checkpoint of replicate k of a
    training stage. It lives outside DVC's outputs (which DVC deletes before a rerun), keyed by what
    DVC reruns the stage for -- its code deps in dvc.yaml, its params section, the replicate and
    the bytes of its input files -- so after a kill -9 the next `dvc repro` resumes each replicate
    where it stopped, a replicate that finished is not trained again when `seeds` gains another
    (its checkpoint is at the last step), and a changed param or code starts afresh instead of
    resuming someone else's run."""
    h = hashlib.sha256()
    h.update(stage_code_digest(stage))
    h.update(json.dumps(section, sort_keys=True).encode())
    h.update(str(replicate).encode())
    for path in inputs:
        h.update(Path(path).read_bytes())
    return CHECKPOINTS_DIR / f"{task}-{stage}-seed{replicate}-{h.hexdigest()[:16]}.pt"


CHECKPOINTS_DIR = Path(".simgan") / "checkpoints"


def stage_code_digest(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> bytes:
    """sha256 over the code deps dvc.yaml declares for `stage` (its deps under stages/ and
    simgan/, directories by their .py files); empty without a dvc.yaml."""
    import yaml

    h = hashlib.sha256()
    if not dvc_yaml.exists():
        return h.digest()
    spec = (yaml.safe_load(dvc_yaml.read_text()).get("stages") or {}).get(stage) or {}
    for dep in (spec.get("do") or spec).get("deps") or []:
        if isinstance(dep, str) and dep.startswith(("stages/", "simgan/")):
            root = Path(dep)
            for f in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
                h.update(str(f).encode())
                h.update(f.read_bytes())
    return h.digest()


def prune_checkpoints(stage: str, task: str, keep: Sequence[Path]) -> None:
    """Remove stage `stage`'s checkpoints of `task` other than `keep` (the current replicates'):
    those of changed params or code, and of seeds no longer in `seeds`."""
    keep = {Path(k).name for k in keep}
    for old in CHECKPOINTS_DIR.glob(f"{task}-{stage}-seed*-*.pt"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


# the bar of the running run_replicates: set before its workers fork, so theirs is the same one
_REPLICATE_BAR: StepBar | None = None


def replicate_steps(n: int = 1) -> None:
    """A replicate of run_replicates did `n` more training steps (from a forked worker too):
    moves the stage's bar. Nothing when no bar is running."""
    if _REPLICATE_BAR is not None:
        _REPLICATE_BAR.step(n)


def run_replicates(
    what: str, fn: Callable[[int], object], seeds: Sequence[int], p: Params, steps: int = 0
) -> dict[int, object]:
    """fn(seed) for every replicate, side by side in params.yaml's `compute.workers` processes of
    `compute.threads` torch threads each (simgan.parallel.map_processes: a result depends on its
    seed and the thread count only). One line per finished replicate, with its time. With `steps`
    (the training steps of one replicate) the bar counts every replicate's steps as fn reports
    them through replicate_steps, so its ETA is there from the first steps; else it counts
    replicates. Returns seed -> result, in seed order."""
    global _REPLICATE_BAR
    threads, workers = compute_layout(p)
    print(f"{what}: {len(seeds)} replicate(s), {min(workers, len(seeds))} worker(s) x {threads} thread(s)", flush=True)
    results: dict[int, object] = {}
    progress = StepBar(len(seeds) * steps if steps else len(seeds), what, unit="step" if steps else "replicate")
    _REPLICATE_BAR = progress if steps else None
    try:
        with progress:
            bar = progress.bar
            for seed, (result, seconds) in map_processes(_timed(fn), seeds, workers, threads, poll=progress.sync):
                results[seed] = result
                if not steps:
                    progress.step()
                bar.set_postfix_str(f"{len(results)}/{len(seeds)} replicates", refresh=False)
                bar.write(f"{what}: seed {seed} done in {seconds:.1f} s")
    finally:
        _REPLICATE_BAR = None
    return {s: results[s] for s in seeds}


class _timed:
    """fn(item) -> (result, seconds): picklable for map_processes (a partial of fn stays one)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, item):
        t0 = time.perf_counter()
        return self.fn(item), time.perf_counter() - t0


def compute_layout(p: Params) -> tuple[int, int]:
    """params.yaml `compute` -> (threads, workers).

    threads: torch threads per process. A parallel reduction's order depends on it, so a
    trained network does too (a 2-thread rerun of the default trained a different refiner):
    it is a param the numeric stages depend on, 1 by default so every machine gets the same
    numbers. workers: processes for independent runs (seeds), which never changes a result."""
    return p.get("compute.threads", int, positive, default=1), p.get("compute.workers", int, positive, default=1)


# Each finished stage's wall and CPU time (this process and its workers), for the per-stage table
# of docs/performance.md (python -m benchmarks.stage_times). Untracked: wall-clock values never go
# into a DVC output.
TIMINGS_DIR = Path(".simgan") / "timings"


def _process_age() -> float:
    """Seconds since this process started (interpreter start and imports included, as `dvc repro`
    sees the stage); from /proc, else since this module was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _cpu_seconds() -> float:
    """CPU seconds of this process since it started and of its finished workers."""
    self_, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + children.ru_utime + children.ru_stime


def record_stage_time(name: str, args: list[str], wall: float, cpu: float) -> None:
    stage = name + (f"@{args[0]}" if args else "")
    print(f"stage {stage}: {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / max(wall, 1e-9):.2f} cores busy)", flush=True)
    try:
        write_json_atomic(TIMINGS_DIR / f"{stage}.json", {"stage": stage, "wall_s": wall, "cpu_s": cpu})
    except OSError:  # a read-only checkout still ran the stage
        pass


def run_stage(main: Callable[[list[str]], None], resumes: bool = False) -> None:
    """Run a stage's main with params.yaml's torch thread count; a user-facing error becomes one
    line on stderr and exit status 2. Ctrl-C becomes one line and exit status 130 (128 + SIGINT,
    the shell's convention) instead of a traceback; outputs are written atomically, so none is
    left half-written. `resumes`: a rerun continues from the stage's running checkpoint
    (adversarial), which the line says."""
    name = Path(sys.modules[main.__module__].__file__).stem if main.__module__ in sys.modules else main.__module__
    try:
        import torch

        torch.set_num_threads(compute_layout(Params.load())[0])
        main(sys.argv[1:])
        record_stage_time(name, sys.argv[1:], _process_age(), _cpu_seconds())
    except (SimganError, ValueError) as e:
        if os.environ.get("SIMGAN_DEBUG"):
            traceback.print_exc()
        print(f"stage {name}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if os.environ.get("SIMGAN_DEBUG"):
            traceback.print_exc()
        then = "resume from the last checkpoint" if resumes else "run it again"
        print(f"stage {name}: interrupted; rerun `dvc repro` to {then}", file=sys.stderr)
        sys.exit(130)
