"""Resumable, verified downloads of the public data sets, and safe archive extraction.

A download streams into `<file>.part` and is renamed onto `<file>` only after its size and sha256
match the registry, so a file without the suffix is always complete and verified. An interrupted
transfer keeps the `.part` and the next run resumes it with an HTTP Range request. A part that has
the full size but the wrong digest can never become valid by resuming, so it is renamed aside to
`<file>.bad` (kept for inspection) and the next run starts afresh.

Registry entries whose size/sha256 are null are "unknown; verify on first download": the file is
accepted and its digest printed so it can be pinned in a user registry (`--registry FILE`), whose
entries override the built-in ones field by field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import yaml
from tqdm import tqdm

from simgan import __version__
from simgan.io import SimganError, atomic_path

BUILTIN_REGISTRY = Path(__file__).with_name("registry.yaml")
_FIELDS = {"url", "filename", "size", "sha256", "extract", "description"}
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    extract: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""


# ----------------------------------------------------------------------------------------- registry


def load_registry(user_registry: str | os.PathLike | None = None) -> dict[str, Entry]:
    """The built-in registry, overridden field by field by `user_registry` (a YAML file)."""
    raw = _read_registry_yaml(BUILTIN_REGISTRY)
    if user_registry is not None:
        for name, fields in _read_registry_yaml(Path(user_registry)).items():
            raw[name] = {**raw.get(name, {}), **fields}
    src = f"{BUILTIN_REGISTRY}" + (f" + {user_registry}" if user_registry is not None else "")
    return {name: _entry(name, fields, src) for name, fields in raw.items()}


def _read_registry_yaml(path: Path) -> dict[str, dict]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SimganError(f"{path}: registry file not found") from None
    except yaml.YAMLError as e:
        raise SimganError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SimganError(f"{path}: expected a mapping of name -> {{url, filename, size, sha256, extract}}")
    for name, fields in data.items():
        unknown = set(fields) - _FIELDS
        if unknown:
            raise SimganError(
                f"{path}: entry '{name}' has unknown key(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}"
            )
    return {str(k): dict(v) for k, v in data.items()}


def _entry(name: str, f: dict, src: str) -> Entry:
    url = f.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise SimganError(f"{src}: entry '{name}': 'url' must be an http(s) URL, got {url!r}")
    filename = f.get("filename") or PurePosixPath(urllib.parse.urlparse(url).path).name
    if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
        raise SimganError(f"{src}: entry '{name}': 'filename' must be a plain file name, got {filename!r}")
    size = f.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise SimganError(f"{src}: entry '{name}': 'size' must be a byte count or null, got {size!r}")
    sha = f.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        raise SimganError(f"{src}: entry '{name}': 'sha256' must be 64 hex digits or null, got {sha!r}")
    extract = f.get("extract") or []
    if not isinstance(extract, list) or not all(isinstance(p, str) for p in extract):
        raise SimganError(f"{src}: entry '{name}': 'extract' must be a list of glob patterns")
    return Entry(
        name, url, filename, size, sha.lower() if sha else None, tuple(extract), str(f.get("description") or "")
    )


# ----------------------------------------------------------------------------------------- download


class _Interrupted(Exception):
    """A transfer that stopped early; the .part is intact and can be resumed."""


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    retries: int = 0,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
    log: IO[str] | None = None,
) -> Path:
    """Fetch `url` to `dest`, resuming `dest.part`, verifying size and sha256 before the rename."""
    log = log if log is not None else sys.stderr
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    sha256 = sha256.lower() if sha256 else None
    if dest.exists():
        _check_existing(dest, size, sha256)
        return dest
    for attempt in range(retries + 1):
        try:
            digest = _transfer(url, part, size, timeout, progress)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise SimganError(f"{e}; the partial file {part} is kept: run again to resume") from None
            print(f"{e}; retrying ({attempt + 1}/{retries})", file=log)
            time.sleep(retry_wait * (attempt + 1))
    got = part.stat().st_size
    if size is not None and got != size:
        bad = _set_aside(part)
        raise SimganError(f"{url}: got {got} bytes, registry expects {size}; moved to {bad}")
    if sha256 is not None and digest != sha256:
        # Full length but wrong content: resuming cannot fix it, so never leave it as a .part.
        bad = _set_aside(part)
        raise SimganError(f"{url}: sha256 {digest} differs from the expected {sha256}; moved to {bad}")
    if sha256 is None or size is None:
        print(f"{dest.name}: unpinned registry entry; to pin it: size: {got}, sha256: {digest}", file=log)
    os.replace(part, dest)
    return dest


def _check_existing(dest: Path, size: int | None, sha256: str | None) -> None:
    got = dest.stat().st_size
    if size is not None and got != size:
        raise SimganError(
            f"{dest}: exists with {got} bytes but the registry expects {size}; delete it to download again"
        )
    if sha256 is not None:
        digest = _hash_file(dest, hashlib.sha256()).hexdigest()
        if digest != sha256:
            raise SimganError(
                f"{dest}: exists but its sha256 {digest} differs from {sha256}; delete it to download again"
            )


def _set_aside(part: Path) -> Path:
    bad = part.with_name(part.name[: -len(".part")] + ".bad")
    os.replace(part, bad)
    return bad


def _hash_file(path: Path, h):
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h


def _transfer(url: str, part: Path, size: int | None, timeout: float, progress: bool) -> str:
    """Append to `part` from where it stops; return the sha256 of the whole part."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        _set_aside(part)  # longer than the real file: it cannot be a prefix of it
        offset = 0
    h = _hash_file(part, hashlib.sha256()) if offset else hashlib.sha256()
    if size is not None and offset == size:
        return h.hexdigest()
    headers = {"User-Agent": f"simgan/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing past what we hold: the part is already whole
            return h.hexdigest()
        raise SimganError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Interrupted(f"cannot reach {url} ({reason}); offline or server down?") from None
    with resp:
        mode = "ab"
        if offset and resp.status != 206:
            offset, mode, h = 0, "wb", hashlib.sha256()  # server ignored Range: start over
        elif offset:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise SimganError(
                    f"{url}: server answered Range {offset}- with Content-Range {resp.headers.get('Content-Range')!r}"
                )
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        if size is not None and expected is not None and expected != size:
            raise SimganError(f"{url}: server reports {expected} bytes, registry expects {size}")
        got = offset
        bar = tqdm(
            total=expected or size,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=part.name[: -len(".part")],
            disable=not progress,
            leave=False,
        )
        with open(part, mode) as f, bar:
            while True:
                try:
                    block = resp.read(_BLOCK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Interrupted(f"download of {url} interrupted after {got} bytes ({e})") from None
                if not block:
                    break
                try:
                    f.write(block)
                except OSError as e:  # a full or failing local disk: retrying the network won't help
                    raise SimganError(f"{part}: cannot write ({e})") from None
                h.update(block)
                got += len(block)
                bar.update(len(block))
    if expected is not None and got < expected:
        raise _Interrupted(f"download of {url} interrupted after {got} of {expected} bytes")
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- extract


def _unsafe_reason(name: str) -> str | None:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "'..' component"
    return None


def _members(archive: Path):
    """Yield (name, kind, size, opener) for every member; kind is 'file', 'dir' or why it is unsafe."""
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                kind = "dir"
            elif stat.S_IFMT(mode) in (0, stat.S_IFREG):  # 0: written by a tool that sets no Unix mode
                kind = "file"
            else:
                kind = "symlink" if stat.S_ISLNK(mode) else "special file"
            yield info.filename, kind, info.file_size, (lambda i=info: zf.open(i))
        return
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SimganError(f"{archive}: not a readable zip or tar archive ({e})") from None
    try:
        members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SimganError(f"{archive}: corrupt or truncated tar archive ({e})") from None
    for m in members:
        if m.isdir():
            kind = "dir"
        elif m.isreg():
            kind = "file"
        elif m.issym() or m.islnk():
            kind = "symlink" if m.issym() else "hard link"
        else:
            kind = "device or special file"
        yield m.name, kind, m.size, (lambda m=m: tf.extractfile(m))


def safe_extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    patterns: Iterable[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Unpack the members matching any glob in `patterns` (all if None) under `dest`.

    Every member is checked first, selected or not: one absolute path, '..' component, link or
    device file refuses the whole archive before anything is written. Each file is written
    atomically, and a file already present with the member's size is kept, so an interrupted
    extraction resumes where it stopped."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise SimganError(f"{archive}: archive not found")
    patterns = list(patterns) if patterns is not None else None
    members = list(_members(archive))
    for name, kind, _, _ in members:
        reason = _unsafe_reason(name) or (None if kind in ("file", "dir") else kind)
        if reason:
            raise SimganError(f"{archive}: refusing to extract, member {name!r} is unsafe ({reason})")
    chosen = [
        (n, s, o)
        for n, k, s, o in members
        if k == "file" and (patterns is None or any(fnmatch.fnmatchcase(n, p) for p in patterns))
    ]
    root = dest.resolve()
    written = []
    with tqdm(
        total=sum(s for _, s, _ in chosen),
        unit="B",
        unit_scale=True,
        desc=f"extract {archive.name}",
        disable=not progress,
        leave=False,
    ) as bar:
        for name, nbytes, opener in chosen:
            target = dest / PurePosixPath(name.replace("\\", "/"))
            if root not in target.resolve().parents:  # a symlink already inside dest could redirect it
                raise SimganError(f"{archive}: member {name!r} would land outside {dest}")
            if not (target.is_file() and target.stat().st_size == nbytes):
                try:
                    with opener() as src, atomic_path(target) as tmp, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, _BLOCK)
                except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
                    raise SimganError(f"{archive}: member {name!r} is corrupt or truncated ({e})") from None
            written.append(target)
            bar.update(nbytes)
    return written


# ----------------------------------------------------------------------------------------- fetch


def fetch(
    name: str,
    dest_dir: str | os.PathLike,
    user_registry: str | os.PathLike | None = None,
    extract: bool = True,
    retries: int = 3,
    progress: bool = True,
) -> tuple[Path, list[Path]]:
    """Download registry entry `name` into `dest_dir` and unpack its `extract` patterns there."""
    registry = load_registry(user_registry)
    if name not in registry:
        raise SimganError(f"download: unknown data set '{name}'; known: {', '.join(sorted(registry))}")
    entry = registry[name]
    dest_dir = Path(dest_dir)
    archive = download(
        entry.url, dest_dir / entry.filename, size=entry.size, sha256=entry.sha256, retries=retries, progress=progress
    )
    files = safe_extract(archive, dest_dir, entry.extract, progress=progress) if extract and entry.extract else []
    return archive, files
