"""Test-session settings.

One intra-op thread per test process: tests are small, and under a loaded machine two OpenMP
threads contending for two busy cores made tiny convolutions ~30x slower (spin-wait barriers).
The suite is parallel across processes instead (pytest -n 2)."""

import os
import signal

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# `import dvc` sets up DVC's log handlers on the sys.stdout/stderr of that moment (dvc/__init__.py).
# Imported first inside a test that captures output (capsys, an in-process `simgan lock-check`),
# they write to that test's closed capture stream ever after, and every later in-process DVC use in
# the worker (dvclive in the adversarial stage) fails with "I/O operation on closed file". Imported
# here, they bind to the session's capture, which stays open.
import dvc  # noqa: F401
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _sigint_is_python_default():
    """Every test starts with Python's own Ctrl-C handler. A child process inherits an ignored
    SIGINT across exec, so one earlier in-process test (or library) that left SIGINT ignored in
    this worker made the Ctrl-C tests' stage processes run to the end (exit 0, not 130)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
