"""What every stage shares: params, paths, error handling and thread settings."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from simgan.config import Params, ParamsError  # noqa: F401  (re-exported for stages)
from simgan.io import SimganError

TASKS = ("gaze", "hand")
SOURCES = ("synthetic", "refined", "real")


def data_path(task: str, name: str) -> Path:
    """data/<task>/<name>.h5 with name in synthetic | real | real_test | refined."""
    return Path("data") / task / f"{name}.h5"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ParamsError(f"task: expected one of {list(TASKS)}, got {task!r}")
    return task


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's main; a user-facing error becomes one line on stderr and exit status 2."""
    name = Path(sys.modules[main.__module__].__file__).stem if main.__module__ in sys.modules else main.__module__
    try:
        main(sys.argv[1:])
    except (SimganError, ValueError) as e:
        if os.environ.get("SIMGAN_DEBUG"):
            traceback.print_exc()
        print(f"stage {name}: error: {e}", file=sys.stderr)
        sys.exit(2)
