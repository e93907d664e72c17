"""Downloader against a local HTTP server (127.0.0.1 only) and safe archive extraction."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import stat
import tarfile
import threading
import zipfile

import pytest

from simgan.data import download as dl
from simgan.io import SimganError

PAYLOAD = bytes(range(256)) * 4000 + b"tail"  # ~1 MB, not a multiple of the read block
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    state: dict = {}

    def log_message(self, *a):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.state
        st.setdefault("ranges", []).append(self.headers.get("Range"))
        if self.path != "/data.bin":
            self.send_error(404)
            return
        body, start = st["body"], 0
        rng = self.headers.get("Range")
        if rng and st.get("ranges_ok", True):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        cut = st.pop("cut_after", None)  # simulate a dropped connection mid-transfer
        self.wfile.write(chunk if cut is None else chunk[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture
def server():
    state = {"body": PAYLOAD}
    handler = type("H", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/data.bin"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _get(server, tmp_path, **kw):
    return dl.download(server["url"], tmp_path / "data.bin", progress=False, **kw)


def test_download_verifies_and_renames(server, tmp_path):
    out = _get(server, tmp_path, size=len(PAYLOAD), sha256=SHA)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    # A verified file is not fetched again.
    n = len(server["ranges"])
    _get(server, tmp_path, size=len(PAYLOAD), sha256=SHA)
    assert len(server["ranges"]) == n


def test_interrupt_then_resume_with_range(server, tmp_path):
    server["cut_after"] = 300_000
    with pytest.raises(SimganError, match="interrupted after 300000 .*run again to resume"):
        _get(server, tmp_path, size=len(PAYLOAD), sha256=SHA)
    part = tmp_path / "data.bin.part"
    assert part.stat().st_size == 300_000 and not (tmp_path / "data.bin").exists()
    out = _get(server, tmp_path, size=len(PAYLOAD), sha256=SHA)
    assert server["ranges"][-1] == "bytes=300000-"
    assert out.read_bytes() == PAYLOAD and not part.exists()


def test_retries_resume_within_one_call(server, tmp_path):
    server["cut_after"] = 123_457
    log = io.StringIO()
    out = _get(server, tmp_path, sha256=SHA, retries=2, retry_wait=0, log=log)
    assert out.read_bytes() == PAYLOAD and "retrying" in log.getvalue()
    assert server["ranges"] == [None, "bytes=123457-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"garbage-prefix")
    server["ranges_ok"] = False
    assert _get(server, tmp_path, sha256=SHA).read_bytes() == PAYLOAD


def test_wrong_checksum_sets_part_aside(server, tmp_path):
    with pytest.raises(SimganError, match=r"sha256 [0-9a-f]{64} differs from the expected 0{64}.*data\.bin\.bad"):
        _get(server, tmp_path, sha256="0" * 64)
    assert (tmp_path / "data.bin.bad").read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


def test_complete_part_with_wrong_digest_is_never_taken_as_complete(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"x" * len(PAYLOAD))
    with pytest.raises(SimganError, match="differs"):
        _get(server, tmp_path, size=len(PAYLOAD), sha256=SHA)
    assert not (tmp_path / "data.bin").exists()
    # The bad copy is out of the way, so the next run downloads afresh and succeeds.
    assert _get(server, tmp_path, size=len(PAYLOAD), sha256=SHA).read_bytes() == PAYLOAD


def test_unpinned_entry_prints_digest(server, tmp_path):
    log = io.StringIO()
    _get(server, tmp_path, log=log)
    assert f"sha256: {SHA}" in log.getvalue() and f"size: {len(PAYLOAD)}" in log.getvalue()


def test_size_mismatch_reported(server, tmp_path):
    with pytest.raises(SimganError, match="server reports .* registry expects 5"):
        _get(server, tmp_path, size=5)


def test_http_error_and_server_gone(server, tmp_path):
    with pytest.raises(SimganError, match="HTTP 404"):
        dl.download(server["url"].replace("data.bin", "nope"), tmp_path / "x", progress=False)
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SimganError, match=rf"cannot reach http://127.0.0.1:{port}/f .*offline"):
        dl.download(f"http://127.0.0.1:{port}/f", tmp_path / "f", progress=False, timeout=5)


def test_registry_user_override_and_fetch(server, tmp_path):
    user = tmp_path / "reg.yaml"
    user.write_text(f"mpiigaze:\n  sha256: {'a' * 64}\nmine:\n  url: {server['url']}\n  sha256: {SHA}\n")
    reg = dl.load_registry(user)
    assert reg["mpiigaze"].sha256 == "a" * 64 and reg["mpiigaze"].url.startswith("http://datasets.d2")
    assert reg["mine"].filename == "data.bin" and reg["nyu"].sha256 is None
    archive, files = dl.fetch("mine", tmp_path / "dest", user, progress=False)
    assert archive.read_bytes() == PAYLOAD and files == []
    with pytest.raises(SimganError, match="unknown data set 'zzz'"):
        dl.fetch("zzz", tmp_path, user)
    user.write_text("x:\n  url: ftp://a/b\n")
    with pytest.raises(SimganError, match=r"reg\.yaml.*'x'.*url"):
        dl.load_registry(user)
    user.write_text("x:\n  url: http://a/b\n  sha: 1\n")
    with pytest.raises(SimganError, match="unknown key"):
        dl.load_registry(user)


# ----------------------------------------------------------------------------------- extraction


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"hello"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "symlink", "hardlink", "device"])
def test_tar_unsafe_members_refused(tmp_path, bad):
    info = None
    if bad in ("symlink", "hardlink", "device"):
        info = tarfile.TarInfo("dataset/link")
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}[bad]
        info.linkname = "/etc/passwd"
        member = (info, None)
    else:
        member = _file(bad)
    arc = tmp_path / "a.tar.gz"
    _tar(arc, [_file("dataset/ok.txt"), member])
    with pytest.raises(SimganError, match=r"a\.tar\.gz: refusing to extract.*unsafe"):
        dl.safe_extract(arc, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "dataset" / "ok.txt").exists()  # nothing written at all
    assert not (tmp_path / "evil.txt").exists()


def test_zip_unsafe_members_refused(tmp_path):
    for name in ("../x", "/abs", "C:\\win"):
        arc = tmp_path / "a.zip"
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr(name, b"x")
        with pytest.raises(SimganError, match="unsafe"):
            dl.safe_extract(arc, tmp_path / "out", progress=False)
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("dataset/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SimganError, match="symlink"):
        dl.safe_extract(arc, tmp_path / "out", progress=False)


def test_selective_zip_extraction_nyu_patterns(tmp_path):
    arc = tmp_path / "nyu.zip"
    names = [
        "dataset/train/depth_1_0000001.png",
        "dataset/train/depth_2_0000001.png",
        "dataset/train/synthdepth_1_0000001.png",
        "dataset/train/rgb_1_0000001.png",
        "dataset/train/joint_data.mat",
        "dataset/test/joint_data.mat",
    ]
    with zipfile.ZipFile(arc, "w") as zf:
        for n in names:
            zf.writestr(n, n.encode())
    patterns = dl.load_registry()["nyu"].extract
    got = dl.safe_extract(arc, tmp_path / "out", patterns, progress=False)
    rel = sorted(p.relative_to(tmp_path / "out").as_posix() for p in got)
    assert rel == sorted(n for n in names if "depth_2" not in n and "rgb" not in n)
    assert (tmp_path / "out/dataset/train/joint_data.mat").read_bytes() == b"dataset/train/joint_data.mat"
    # Re-running keeps complete files (resumable) and rewrites none.
    mtime = os.stat(got[0]).st_mtime_ns
    dl.safe_extract(arc, tmp_path / "out", patterns, progress=False)
    assert os.stat(got[0]).st_mtime_ns == mtime


def test_mpiigaze_patterns_and_corrupt_archive(tmp_path):
    arc = tmp_path / "m.tar.gz"
    _tar(
        arc,
        [
            _file("MPIIGaze/Data/Normalized/p00/day01.mat"),
            _file("MPIIGaze/Data/Original/p00/x.jpg"),
            _file("MPIIGaze/Evaluation Subset/sample list for eye image/p00.txt"),
        ],
    )
    got = dl.safe_extract(arc, tmp_path / "o", dl.load_registry()["mpiigaze"].extract, progress=False)
    assert len(got) == 2 and all("Original" not in str(p) for p in got)
    trunc = tmp_path / "t.tar.gz"
    trunc.write_bytes(arc.read_bytes()[:40])
    with pytest.raises(SimganError, match=r"t\.tar\.gz"):
        dl.safe_extract(trunc, tmp_path / "o2", progress=False)
    junk = tmp_path / "j.zip"
    junk.write_bytes(b"not an archive")
    with pytest.raises(SimganError, match=r"j\.zip: not a readable zip or tar"):
        dl.safe_extract(junk, tmp_path / "o3", progress=False)
