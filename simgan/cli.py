"""The `simgan` command. Each feature module registers its own subcommand, so this file only lists
them: a module `M` in COMMAND_MODULES defines `register(subparsers)` which adds a parser and sets
`func` (a callable taking the parsed args and returning an exit code or None)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from simgan.io import SimganError

DESCRIPTION = """\
S+U learning (Shrivastava et al., CVPR 2017): make simulator images look real while keeping their
labels. These commands make, import, look at, refine and export data sets and compare runs; the
whole pipeline is `make repro` (dvc repro) in the repository, or `prefect deployment run simgan/full`.
"""
EPILOG = "Run `simgan COMMAND --help` for a command's options. Docs: README.md and docs/ in the repository."

COMMAND_MODULES = [
    "simgan.sim.cli",  # simulate, show
    "simgan.data.cli",  # import, download, export
    "simgan.compare",  # compare
    "simgan.config",  # params apply|overrides
    "simgan.refine_cli",  # refine (sharded, on Dask)
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simgan")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simgan",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a feature not built yet; the others still work
                continue
            raise
        module.register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for Ctrl-C, so that every `with`
    block unwinds: the temp output is removed and worker pools are terminated. Python's default
    for SIGTERM is to die on the spot, leaving both (and workers writing into a closed pipe)."""


_INTERRUPTS = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises Terminated, and an interrupt that Python dropped is delivered again.

    A signal's exception raised while a __del__ or weakref callback runs is printed as "Exception
    ignored in: ..." and lost (seen here: SIGTERM during a parallel simulate, which then ran on to
    the end). The unraisable hook sends the signal again from a thread a moment later, once the
    main thread is back in ordinary code (sent from the hook itself, it was lost in the hook)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        raise Terminated

    def on_unraisable(unraisable):
        for exc_type, signum in _INTERRUPTS.items():
            if unraisable.exc_type is not None and issubclass(unraisable.exc_type, exc_type):
                if signum == signal.SIGTERM:
                    signal.signal(signal.SIGTERM, on_sigterm)
                threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
                return
        previous_hook(unraisable)

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    previous_hook, sys.unraisablehook = sys.unraisablehook, on_unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        sys.unraisablehook = previous_hook


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _interruptible():
            rc = args.func(args)
    except SimganError as e:
        print(f"simgan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simgan {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"simgan {args.command}: interrupted (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM killed
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
