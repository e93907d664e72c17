"""Atomic file output: every artefact is written to a temporary path beside its target and renamed
into place only when complete, so an interrupted process never leaves a file that DVC (or a reader)
would take as valid, and an existing output is never clobbered by a half-written one. Also the
user-facing error, and the checks commands make on their outputs and options before any work."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class SimganError(Exception):
    """A user-facing error: the message names the file, key or parameter and what was expected.

    The CLI prints it as one line and exits with status 2 (no traceback)."""


def check_output_path(target: str | os.PathLike, option: str = "--out", directory: bool = False) -> Path:
    """Fail with one line naming `option` unless `target` can be written as atomic_path writes it.

    Every command calls this for each of its outputs before any work starts, so an --out under a
    file, in a directory this user may not write, or naming an existing directory costs nothing
    instead of a traceback after the whole data set was rendered. With `directory`, `target` is a
    folder to write files into (it may exist). Missing parent folders are fine: atomic_path creates
    them, so the nearest existing ancestor is the one that must be a writable directory."""
    target = Path(target)
    got = f"parameter '{option}': expected"
    if not directory and target.is_dir():
        raise SimganError(f"{got} a file name, got {str(target)!r} (an existing directory)")
    if directory and target.exists() and not target.is_dir():
        raise SimganError(f"{got} a directory, got {str(target)!r} (an existing file)")
    ancestor = target if directory else target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SimganError(f"{got} a path inside a directory, got {str(target)!r} ({str(ancestor)!r} is a file)")
    # os.access also says no on a read-only file system or an immutable (chattr +i) directory, for root too
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SimganError(
            f"{got} a path in a directory this user can write, got {str(target)!r} ({str(ancestor)!r} is not writable)"
        )
    return target


def require_at_least(option: str, value: int | None, minimum: int = 1) -> None:
    """An integer command-line option (None: not given) below its minimum -> one line naming it."""
    if value is not None and value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SimganError(f"parameter '{option}': expected {expected}, got {value}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto `target` on success.

    On any exception the temporary file is removed and `target` is left exactly as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}-", suffix=suffix if suffix is not None else ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs are ordinary files, so give them the umask's usual mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _remove_stale_temps(target: Path) -> None:
    """Delete temp files of `target` left by a process that died before renaming (kill -9, power
    loss): the pid in the name says whose it is, and a live writer's file is never touched."""
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*-*"):
        pid = tmp.name[len(target.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def copy_file_atomic(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy `source` onto `target` through atomic_path: a kill mid-copy leaves `target` as it was
    (a half-copied checkpoint would not load, and a resume would stop on it)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def write_json_atomic(target: str | os.PathLike, obj) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")
