"""What every stage shares: params, paths, error handling and thread settings."""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simgan.config import Params, ParamsError, device_param, positive  # noqa: F401  (Params, ParamsError, device_param: re-exported for stages)
from simgan.data.format import Dataset
from simgan.io import SimganError
from simgan.layout import data_path  # noqa: F401  (re-exported for stages)

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


def seeds_param(p: Params) -> list[int]:
    """params.yaml's `seeds`: the distinct integer seeds every estimator and comparison is repeated
    over. A repeated seed would train the same model twice and report its std as if it were a
    spread over seeds."""
    seeds = p.get("seeds", list)
    if len(seeds) < 1 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ParamsError(f"{p.path}: key 'seeds': expected a non-empty list of integers, got {seeds!r}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ParamsError(f"{p.path}: key 'seeds': expected distinct seeds, got {seeds!r} ({repeated[0]} repeated)")
    return seeds


def compute_layout(p: Params) -> tuple[int, int]:
    """params.yaml `compute` -> (threads, workers).

    threads: torch threads per process. A parallel reduction's order depends on it, so a
    trained network does too (a 2-thread rerun of the default trained a different refiner):
    it is a param the numeric stages depend on, 1 by default so every machine gets the same
    numbers. workers: processes for independent runs (seeds), which never changes a result."""
    return p.get("compute.threads", int, positive, default=1), p.get("compute.workers", int, positive, default=1)


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
