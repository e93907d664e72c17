"""What every stage shares: params, paths, error handling and thread settings."""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from simgan.config import Params, ParamsError, positive  # noqa: F401  (Params, ParamsError: re-exported for stages)
from simgan.data.format import Dataset
from simgan.io import SimganError

# The paper's tasks, whose report (stages/report.py) and metrics are fixed; params.yaml's `tasks`
# may add tasks of the user's own images, which are "generic" data and regression estimators.
TASKS = ("gaze", "hand")
SOURCES = ("synthetic", "refined", "real")
# A task name becomes a stage suffix and a directory name (data/<task>/, models/<task>/).
TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
TASK_ARG = "TASK (gaze, hand or a key of params.yaml 'tasks')"  # a per-task stage's one argument, in usage lines


def data_path(task: str, name: str) -> Path:
    """data/<task>/<name>.h5 with name in synthetic | real | real_test | refined."""
    return Path("data") / task / f"{name}.h5"


def pipeline_tasks(p: Params) -> list[str]:
    """params.yaml's `tasks` (the dvc.yaml foreach), checked: gaze and hand, plus user tasks."""
    tasks = p.get("tasks", dict, default={t: {} for t in TASKS})
    for name in tasks:
        if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
            raise ParamsError(f"{p.path}: key 'tasks.{name}': expected a task name of letters, digits and _ (starting with a letter)")
    return list(tasks)


def check_task(task: str, p: Params | None = None) -> str:
    if task in TASKS:
        return task
    p = p or Params.load()
    names = pipeline_tasks(p)
    if task not in names:
        raise ParamsError(f"task: expected one of {names} (params.yaml 'tasks'), got {task!r}")
    return task


def data_task(task: str) -> str:
    """The data-format / estimator task of a pipeline task: gaze, hand, or generic for user tasks."""
    return task if task in TASKS else "generic"


def read_labels(ds: Dataset, task: str, rows: slice | None = None) -> tuple[np.ndarray, list[str] | None]:
    """The labels an estimator of pipeline task `task` learns (simgan.estimators.read_training_labels):
    gaze vectors / joints, or for a user task its label columns as one (N, K) matrix and the K names."""
    from simgan.estimators import read_training_labels  # torch: only the stages that train or score need it

    return read_training_labels(ds, data_task(task), rows, name=task)


def compute_layout(p: Params) -> tuple[int, int]:
    """params.yaml `compute` -> (threads, workers).

    threads: torch threads per process. A parallel reduction's order depends on it, so a
    trained network does too (a 2-thread rerun of the default trained a different refiner):
    it is a param the numeric stages depend on, 1 by default so every machine gets the same
    numbers. workers: processes for independent runs (seeds), which never changes a result."""
    return p.get("compute.threads", int, positive, default=1), p.get("compute.workers", int, positive, default=1)


DEVICES = "'cpu', 'cuda', 'cuda:N' or 'auto'"


def device_param(p: Params, key: str) -> str:
    """A stage's device key ('auto': CUDA when present) -> the device it runs on, checked in the
    stage's own process so that a typo or a missing GPU is one error naming the key, not a worker's
    traceback."""
    from simgan.device import resolve_device

    name = p.get(key, str, default="cpu")
    try:
        dev = resolve_device(name)
    except RuntimeError:  # torch.device could not parse it
        dev = None
    except ValueError as e:  # a device this machine does not have
        raise ParamsError(f"{p.path}: key '{key}': {str(e).removeprefix('device: ')}") from None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ParamsError(f"{p.path}: key '{key}': expected {DEVICES}, got {name!r}")
    return str(dev)


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's main with params.yaml's torch thread count; a user-facing error becomes one
    line on stderr and exit status 2."""
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
