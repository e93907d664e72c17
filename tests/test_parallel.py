"""simgan.parallel.map_processes: forked workers that report every failure and never hang."""

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from simgan.parallel import WorkerDied, map_processes


def _square_or_fail(item):
    if item == "fail":
        raise ValueError("replicate 'fail' diverged")
    if item == "die":
        os._exit(3)
    if item == "slow":
        time.sleep(60)
    return item * item


def _consume(items, workers=2):
    """map_processes in a thread: (results, the exception, whether it finished within 30 s)."""
    out = {"results": [], "error": None}

    def run():
        try:
            out["results"] = sorted(map_processes(_square_or_fail, items, workers=workers))
        except Exception as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=30)
    return out["results"], out["error"], not t.is_alive()


def test_forked_workers_give_every_result_as_in_this_process():
    inline = sorted(map_processes(_square_or_fail, [1, 2, 3, 4, 5], workers=1))
    assert _consume([1, 2, 3, 4, 5], workers=3) == (inline, None, True)
    assert inline == [(k, k * k) for k in (1, 2, 3, 4, 5)]


def test_a_failing_item_raises_its_error_at_once_and_the_other_workers_are_killed():
    t0 = time.monotonic()
    _, error, finished = _consume(["slow", "fail", 3])
    assert finished and time.monotonic() - t0 < 30  # the slow item (60 s) did not hold it up
    assert isinstance(error, ValueError) and "replicate 'fail' diverged" in str(error)
    assert not mp.active_children()  # the slow item's worker was killed and reaped


def test_a_worker_that_dies_without_a_result_is_an_error_naming_its_item():
    # multiprocessing.Pool waits forever for the result of a worker that died
    _, error, finished = _consume([1, "die", 2])
    assert finished
    assert isinstance(error, WorkerDied) and "item 'die'" in str(error) and "exit code 3" in str(error)


def test_a_caller_that_stops_reading_exits_without_waiting_for_the_workers():
    # The caller's loop raised (SIGTERM while it wrote a chunk, in CI) and the suspended generator
    # outlives the exit handlers (a module global here, a reference cycle there): a worker blocked
    # sending a result larger than the pipe's buffer must not hold the interpreter's exit.
    script = textwrap.dedent(
        """
        import sys, time
        from simgan.parallel import map_processes

        def big(item):
            if item > 0:
                time.sleep(0.5)  # still running when the caller stops
            return b"x" * (1 << 20)

        results = map_processes(big, range(3), workers=2)
        next(results)
        sys.exit(7)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7 and proc.stderr == ""  # no worker traceback (BrokenPipeError)


def test_polls_while_it_waits():
    calls = []
    results = sorted(map_processes(_square_or_fail, [2, 3], workers=2, poll=lambda: calls.append(1), poll_s=0.01))
    assert results == [(2, 4), (3, 9)] and len(calls) >= 2


@pytest.mark.parametrize("workers, threads", [(0, 1), (2, 0)])
def test_bad_worker_counts_are_named(workers, threads):
    with pytest.raises(ValueError, match="workers/threads: expected >= 1"):
        list(map_processes(_square_or_fail, [1, 2], workers=workers, threads=threads))
