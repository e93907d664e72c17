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
from simgan.data.format import LABELS_GROUP, Dataset, label_keys
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
    """The labels an estimator of `task` learns, from an open data set: gaze vectors / joints, or
    for a user task every numeric `labels/<name>` column as one (N, K) matrix with its K names."""
    if task in TASKS:
        key = label_keys(task)[0]
        return ds.read([key], rows)[key], None
    if ds.task != "generic":
        raise SimganError(f"{ds.path}: attr 'task': expected 'generic' for the user task {task!r} "
                          f"(written by `simgan import folder`), got {ds.task!r}")
    keys = [k for k in ds.keys() if k.startswith(f"{LABELS_GROUP}/")]
    if not keys:
        raise SimganError(f"{ds.path}: key '{LABELS_GROUP}/': expected at least one label column for task {task!r} "
                          f"(import the folder with --labels TABLE), found none")
    from simgan.estimators import label_matrix  # torch: only the stages that train or score need it

    cols = ds.read(keys, rows)
    try:
        return label_matrix({k.split("/", 1)[1]: v for k, v in cols.items()})
    except ValueError as e:
        raise SimganError(f"{ds.path}: {e}") from None


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
