"""Deterministic parallelism: chunked work for generators and importers, and independent runs (map_processes).

Work of N items is cut into fixed chunks; chunk k draws from its own seed, spawned from the run's
seed by index (numpy SeedSequence). Results therefore depend on (seed, N, chunk size) only, never
on how many worker processes ran or in what order they finished: same seed, same bytes."""

from __future__ import annotations

import atexit
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

DEFAULT_CHUNK = 1024


def chunk_bounds(n: int, chunk: int = DEFAULT_CHUNK) -> list[tuple[int, int]]:
    if n < 0 or chunk <= 0:
        raise ValueError(f"chunk_bounds: expected n >= 0 and chunk > 0, got n={n}, chunk={chunk}")
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def chunk_seeds(seed: int, n_chunks: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(n_chunks)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _call(args):
    fn, k, start, stop, seedseq = args
    return k, fn(start, stop, np.random.default_rng(seedseq))


def map_chunks(
    fn: Callable[[int, int, np.random.Generator], object],
    n: int,
    seed: int,
    workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[tuple[int, object]]:
    """Yield (chunk_index, fn(start, stop, rng)) in chunk order.

    `fn` must be a picklable top-level function. With workers == 1 it runs in this process
    (no fork), which is also what tests of determinism compare the parallel path against."""
    bounds = chunk_bounds(n, chunk)
    seeds = chunk_seeds(seed, len(bounds))
    jobs = [(fn, k, s, e, seeds[k]) for k, (s, e) in enumerate(bounds)]
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    # map_processes' forked workers (one thread each; no lock shared between them, so a failing
    # chunk cannot hang the run; in this process with one worker), put back in chunk order so
    # writers can stream: at most about `workers` finished chunks wait for an earlier one
    done, next_k = {}, 0
    for _, (k, result) in map_processes(_call, jobs, workers):
        done[k] = result
        while next_k in done:
            yield next_k, done.pop(next_k)
            next_k += 1


def _set_threads(threads: int = 1) -> None:
    """A forked worker's initializer: `threads` torch/BLAS threads, and signals left to the parent.

    Ctrl-C reaches the whole process group, and so does a scheduler's SIGTERM: the workers ignore
    both, so only the parent stops (one "interrupted" line, its `with` blocks remove the temp
    output) and kills them with SIGKILL (map_processes). A worker that died of the group's signal
    would otherwise race the parent's own handler and be reported as a worker that ended without
    a result; and a handler the parent installed (simgan.cli turns SIGTERM into an exception)
    would be inherited and print a traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # only when the parent already loaded torch: importing it here would cost seconds per worker
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


class WorkerDied(RuntimeError):
    """A map_processes worker ended without sending its result (killed, or os._exit)."""


# Every map_processes worker started and not yet reaped. A caller that stops reading the results (an
# exception in the loop body: SIGTERM while a chunk is written, say) leaves the generator suspended,
# and where a reference cycle or a module global keeps it alive its `finally` runs only after the
# interpreter's exit handlers. multiprocessing's own handler sends its daemonic children SIGTERM,
# which these workers ignore, and joins them: a worker blocked sending a result larger than the
# pipe's buffer to a parent that no longer reads waited forever, and so did the interrupted command
# (tests/test_cli_inputs.py in CI, session 16). This handler, registered after multiprocessing's
# (importing multiprocessing.connection registered that one) and so run before it, kills them.
_LIVE_WORKERS: set = set()


@atexit.register
def _kill_live_workers() -> None:
    for proc in list(_LIVE_WORKERS):
        _reap(proc, kill=True)


def _reap(proc, kill: bool = False) -> None:
    if proc.pid is not None:  # started
        if kill:
            proc.kill()
        proc.join()
    _LIVE_WORKERS.discard(proc)


def _short(item, limit: int = 120) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_item(conn, fn, item, threads: int) -> None:
    """The body of one forked map_processes worker: fn(item), or the exception it raised, sent to
    the parent over this worker's own pipe."""
    _LIVE_WORKERS.clear()  # the siblings inherited from the parent are not this worker's to kill
    try:
        _set_threads(threads)
        result = (True, fn(item))
    except BaseException as e:  # SystemExit too: the parent decides what a failure means
        result = (False, e)
    # plain pickle, by value: multiprocessing's pickler would share a tensor's storage through a
    # file descriptor that this process, about to exit, could no longer hand over
    try:
        payload = pickle.dumps(result)
    except Exception as e:  # a result or an exception that does not pickle
        payload = pickle.dumps(
            (False, RuntimeError(f"map_processes: the result for item {_short(item)} does not pickle: {e!r}"))
        )
    conn.send_bytes(payload)
    conn.close()


def map_processes(
    fn: Callable[[object], object],
    items: Sequence,
    workers: int,
    threads: int = 1,
    poll: Callable[[], object] | None = None,
    poll_s: float = 0.5,
) -> Iterator[tuple[object, object]]:
    """Yield (item, fn(item)) for independent runs (one per seed, say) as each one finishes.

    Up to `workers` forked processes at a time, one per item, with `threads` torch threads each. A
    result depends on its item and `threads` only, never on `workers`: the same computation runs
    in a worker as in this process. On the 2-vCPU machine here, 2 single-thread workers trained 4
    seeds 1.27x faster than one 2-thread process on a quiet machine and 1.73x under load
    (benchmarks/bench_seeds.py); the main point is a thread count that does not vary. `fn` must be
    picklable (a top-level function or a partial of one); the caller should not have run torch
    with more than `threads` threads before (fork safety). `poll()`: called in this process every
    `poll_s` seconds while it waits for the workers, and after each result (a progress bar fed by
    a StepCounter: the parent's main thread draws it, no thread is running when the workers are
    forked).

    An exception in fn(item) is raised here, after the other workers are killed; a worker that
    dies without a result raises WorkerDied naming its item. Each worker sends its result over a
    pipe of its own and shares no lock with the others: multiprocessing.Pool's workers share one
    locked result queue, and Pool.terminate (on the first failure) could kill a worker in the middle
    of sending, leaving that lock held and the stage hung for good (seen in tests/faults'
    divergence test, session 15)."""
    items = list(items)
    if workers < 1 or threads < 1:
        raise ValueError(f"workers/threads: expected >= 1, got {workers}/{threads}")
    if workers == 1 or len(items) <= 1:
        for item in items:
            yield item, fn(item)
        return
    ctx = mp.get_context("fork")
    waiting, running = list(items), {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                item = waiting.pop(0)
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_run_item, args=(writer, fn, item, threads), daemon=True)
                _LIVE_WORKERS.add(proc)  # before start: an interrupt between the two must not lose it
                proc.start()
                writer.close()  # the worker's copy is the only writer: EOF here when it dies
                running[reader] = (proc, item)
            ready = mp.connection.wait(list(running), timeout=poll_s if poll is not None else None)
            if not ready:
                poll()
                continue
            for conn in ready:
                proc, item = running[conn]
                try:
                    ok, value = pickle.loads(conn.recv_bytes())
                except EOFError:
                    _reap(proc)
                    raise WorkerDied(
                        f"map_processes: the worker for item {_short(item)} ended without a result (exit code {proc.exitcode})"
                    ) from None
                _reap(proc)
                del running[conn]
                conn.close()
                if not ok:
                    raise value
                if poll is not None:
                    poll()
                yield item, value
    finally:
        for conn, (proc, _) in running.items():
            _reap(proc, kill=True)
            conn.close()


class StepCounter:
    """A count the forked workers of map_processes add to and the parent reads: progress over
    work that runs in other processes (the training steps of every seed, say). Create it before
    the first worker is forked (they inherit it); `add` takes a lock, microseconds against any
    training step, and touches no random state."""

    def __init__(self) -> None:
        self._value = mp.get_context("fork").Value("q", 0)

    def add(self, n: int = 1) -> None:
        with self._value.get_lock():
            self._value.value += n

    @property
    def value(self) -> int:
        # read without the lock (an aligned 64-bit load): a worker killed inside `add`, as
        # map_processes does when another worker failed, leaves the lock held forever, and a
        # locked read here hung the stage instead of reporting the error
        return self._value.get_obj().value


class StepBar:
    """A tqdm bar (stderr) over units of work -- every seed's training steps -- done in this
    process or in map_processes' forked workers, so the ETA is there from the first steps rather
    than after the first whole seed. `step` is the per-unit callback: in a worker it only adds to
    the shared StepCounter; in this process it also moves the bar. Pass `sync` to map_processes as
    its `poll`: the parent draws the workers' count while it waits. Closing syncs a last time."""

    def __init__(self, total: int, desc: str, unit: str = "step"):
        from tqdm.auto import tqdm

        self.counter = StepCounter()
        self._pid = os.getpid()
        self.bar = tqdm(total=total, desc=desc, unit=unit)

    def step(self, n: int = 1) -> None:
        self.counter.add(n)
        if os.getpid() == self._pid:
            self.sync()

    def sync(self) -> None:
        done = self.counter.value
        if done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc) -> None:
        self.sync()
        self.bar.close()


def concat_chunks(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
