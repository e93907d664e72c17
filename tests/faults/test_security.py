"""Security (issue 9): no code runs from a model file, downloads are verified before use, archives
cannot write outside their folder, no shell, services on loopback only."""

from __future__ import annotations

import ast
import functools
import hashlib
import http.server
import io
import pickle
import re
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from simgan.checkpoint import load_checkpoint, load_refiner
from simgan.data.download import download, fetch, safe_extract
from simgan.estimators import load_estimator
from simgan.io import SimganError

from .conftest import PYTHON, ROOT, run

pytestmark = pytest.mark.faults

CODE_DIRS = ("simgan", "stages", "flows", "benchmarks")


def _python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts)


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


# ---------------------------------------------------------------------------------------------
# Model files


def test_every_torch_load_is_weights_only():
    found = []
    for path in _python_files(*CODE_DIRS):
        text = path.read_text()
        assert not re.search(r"from\s+torch(\.serialization)?\s+import\s+[^\n]*\bload\b", text), (
            f"{path}: import torch.load by name"
        )
        for call in _calls(path):
            if _dotted(call.func) in ("torch.load", "torch.serialization.load"):
                kw = {k.arg: k.value for k in call.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                assert ok, f"{path.relative_to(ROOT)}:{call.lineno}: torch.load without weights_only=True"
                found.append(path.name)
    assert {"checkpoint.py", "checkpoints.py"} <= set(found)  # the scan sees the real loaders


class _Payload:
    """Unpickling calls open(marker, "w"): proof of code execution, without a shell."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(path: Path, marker: Path, legacy: bool) -> Path:
    # shaped like each loader's file, so only the unpickling itself stands between the payload and a load
    obj = {
        "model": {"weight": _Payload(marker)},
        "refiner_kwargs": {},
        "in_channels": 1,
        "task": "gaze",
        "net_kwargs": {},
        "version": 1,
    }
    if legacy:
        path.write_bytes(pickle.dumps(obj, protocol=2))  # torch's own protocol: no warning noise
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "raw-pickle"])
def test_malicious_pickle_is_refused_by_every_loader(tmp_path, legacy):
    probe = tmp_path / "probe-ran"
    probe_file = _malicious(tmp_path / "probe.pt", probe, legacy)
    pickle.loads(probe_file.read_bytes()) if legacy else torch.load(probe_file, weights_only=False)
    assert probe.exists(), "the payload must be live for the refusals below to mean anything"

    marker = tmp_path / "pwned"
    evil = _malicious(tmp_path / "evil.pt", marker, legacy)
    for loader in (load_checkpoint, load_refiner, load_estimator):
        with pytest.raises(SimganError, match=re.escape(str(evil))):
            loader(evil)
        assert not marker.exists(), loader.__name__


# ---------------------------------------------------------------------------------------------
# Downloads and archives


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_download_is_verified_by_sha256_before_use(served, tmp_path):
    root, url = served
    good = _tar([(_member("data/eyes.txt"), b"eyes")])
    (root / "set.tar").write_bytes(good)
    digest = hashlib.sha256(good).hexdigest()
    wrong = hashlib.sha256(b"something else").hexdigest()

    dest = tmp_path / "plain"
    with pytest.raises(SimganError, match=f"sha256 {digest} differs from the expected {wrong}"):
        download(f"{url}/set.tar", dest / "set.tar", sha256=wrong, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["set.tar.bad"]  # never under the final name

    registry = tmp_path / "registry.yaml"
    for sha, ok in ((wrong, False), (digest, True)):
        registry.write_text(
            yaml.safe_dump({"set": {"url": f"{url}/set.tar", "sha256": sha, "size": len(good), "extract": ["data/*"]}})
        )
        out = tmp_path / f"fetch-{ok}"
        if ok:
            fetch("set", out, user_registry=registry, retries=0, progress=False)
            assert (out / "data" / "eyes.txt").read_bytes() == b"eyes"
        else:
            with pytest.raises(SimganError, match="sha256"):
                fetch("set", out, user_registry=registry, retries=0, progress=False)
            assert not (out / "data").exists()  # a tampered archive is never unpacked


UNSAFE_TAR = {
    "absolute path": (_member("/tmp/simgan-faults-abs.txt"), "absolute path"),
    "dot-dot": (_member("data/../../escape.txt"), "'..' component"),
    "symlink": (_member("data/link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
    "hard link": (_member("data/hard", tarfile.LNKTYPE, "/etc/passwd"), "hard link"),
}


@pytest.mark.parametrize("case", UNSAFE_TAR)
def test_tar_extraction_refuses_unsafe_members(tmp_path, case):
    info, reason = UNSAFE_TAR[case]
    archive = tmp_path / "a.tar"
    # a safe member first: the whole archive is checked before anything is written
    archive.write_bytes(_tar([(_member("data/ok.txt"), b"ok"), (info, b"evil")]))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SimganError, match=re.escape(f"member {info.name!r} is unsafe ({reason})")):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/simgan-faults-abs.txt").exists()


@pytest.mark.parametrize(
    "name, reason, mode",
    [
        ("../escape.txt", "'..' component", 0o100644),
        ("/tmp/simgan-faults-abs.txt", "absolute path", 0o100644),
        ("data/link", "symlink", stat.S_IFLNK | 0o777),
    ],
)
def test_zip_extraction_refuses_unsafe_members(tmp_path, name, reason, mode):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/ok.txt", b"ok")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, b"/etc/passwd")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SimganError, match=re.escape(f"is unsafe ({reason})")):
        safe_extract(archive, dest, progress=False)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


# ---------------------------------------------------------------------------------------------
# Processes and services


def test_no_shell_anywhere():
    for path in _python_files("simgan", "stages", "flows"):
        for call in _calls(path):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            assert _dotted(call.func) not in (
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            ), where
            for kw in call.keywords:
                if kw.arg == "shell":
                    assert isinstance(kw.value, ast.Constant) and kw.value.value is False, (
                        f"{where}: shell={ast.unparse(kw.value)}"
                    )


LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WILDCARD = {"0.0.0.0", "::", "[::]"}


def test_nothing_binds_to_all_interfaces():
    for path in _python_files("simgan", "stages", "flows"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in WILDCARD:
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: wildcard address {node.value!r}")
    # commands and settings a user would copy from the docs, the Makefile or a Prefect config
    texts = sorted((ROOT / "docs").glob("*.md")) + [
        p for p in (ROOT / "Makefile", ROOT / "README.md", ROOT / "prefect.yaml") if p.exists()
    ]
    texts += _python_files("flows")
    for path in texts:
        text = path.read_text()
        settings = re.findall(r"--host[ =]+([^\s`'\"]+)", text) + re.findall(
            r"\bhost\s*[=:]\s*['\"]([^'\"]+)['\"]", text
        )
        settings += [v for _, v in re.findall(r"(PREFECT_\w*HOST)\s*[=:]\s*['\"]?([^\s'\"`]+)", text)]
        for host in settings:
            assert host in LOOPBACK, f"{path.relative_to(ROOT)}: host {host}"


def test_services_default_to_loopback():
    server_code = [
        p for p in _python_files("flows") if re.search(r"\bserve\(|server|uvicorn|http\.server", p.read_text())
    ]
    if not server_code:
        pytest.skip("flows/ starts no service yet")
    pytest.importorskip("prefect")
    # in a fresh process from the repository root, with the defaults flows/ sets before Prefect loads:
    # the API server (`prefect server start`, the ephemeral one) and the webserver `serve()` can start
    probe = (
        "import flows; from prefect.settings import get_current_settings as s; "
        "print(s().server.api.host); print(s().runner.server.host)"
    )
    hosts = run([PYTHON, "-c", probe], ROOT).stdout.split()
    assert len(hosts) == 2 and set(hosts) <= LOOPBACK, hosts
