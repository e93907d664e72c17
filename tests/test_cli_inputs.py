"""Bad inputs to the `simgan` CLI (issue 21): each is one line naming the option, file or key and
what was expected, exit status 2, checked before any work so nothing is written and nothing
already there is lost; or, where the input is fine but was misread, the right result."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from simgan.cli import Terminated, _interruptible, main
from simgan.data.format import open_dataset, write_dataset
from simgan.data.importers import decode_image
from simgan.io import SimganError, check_output_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed
from stages.prepare import main as prepare_main

GAZE_ATTRS = {"task": "gaze", "domain": "real", "source": "test", "generator_version": "t", "seed": -1}


def run_cli(capsys, *argv) -> tuple[int, str]:
    """`simgan argv...` in this process -> (exit status, its one stderr line or all of stderr)."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def _eyes_file(path: Path, n: int = 4) -> Path:
    write_dataset(path, {"images": np.full((n, 35, 55), 100, np.uint8)}, GAZE_ATTRS, require_labels=False)
    return path


def _image_folder(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((35, 55), 40 * i, np.uint8)).save(root / f"eye{i}.png")
    return root


def _listing(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


COMMANDS = (
    "simulate --out",
    "show --out",
    "import folder --out",
    "import folder --report",
    "export --out",
    "download --dest",
)


def _commands(tmp_path: Path, out_dir: str) -> dict[str, list]:
    """One command per output option, each writing under `out_dir` (relative to tmp_path)."""
    d = tmp_path / out_dir
    return {
        "simulate --out": [
            "simulate",
            "eyes",
            "--n",
            4,
            "--seed",
            0,
            "--workers",
            1,
            "--no-progress",
            "--out",
            d / "x.h5",
        ],
        "show --out": ["show", tmp_path / "e.h5", "--out", d / "x.png"],
        "import folder --out": [
            "import",
            "folder",
            tmp_path / "imgs",
            "--size",
            "35x55",
            "--workers",
            1,
            "--out",
            d / "x.h5",
        ],
        "import folder --report": [
            "import",
            "folder",
            tmp_path / "imgs",
            "--size",
            "35x55",
            "--workers",
            1,
            "--out",
            tmp_path / "new.h5",
            "--report",
            d / "bad.txt",
        ],
        "export --out": ["export", tmp_path / "e.h5", "--out", d / "x.parquet"],
        "download --dest": ["download", "mpiigaze", "--dest", d / "raw"],
    }


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> Path:
    """e.h5 and imgs/ in tmp_path, and every command's work replaced by a failure: each check
    under test must come before the work (an --out that is a directory was once found only after
    the whole data set was rendered)."""
    _eyes_file(tmp_path / "e.h5")
    _image_folder(tmp_path / "imgs")

    def work(*args, **kwargs):
        raise AssertionError("the command started its work before checking its inputs")

    for name in (
        "simgan.sim.eyes.simulate_eyes_to_file",
        "simgan.sim.cli.render_grid",
        "simgan.data.importers.folder.import_folder",
        "simgan.data.export.export_labels",
        "simgan.data.download.fetch",
    ):
        monkeypatch.setattr(name, work)
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS)
def test_out_under_an_existing_file(inputs, capsys, command):
    argv = _commands(inputs, "e.h5")[command]  # a path below the data set file e.h5
    before = _listing(inputs)
    rc, err = run_cli(capsys, *argv)
    option = command.split()[-1]
    assert_one_line_error(rc, err, f"parameter '{option}'", f"'{inputs / 'e.h5'}' is a file")
    assert _listing(inputs) == before


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory this process cannot create files in. As root (these tests' usual user here)
    mode 0555 is no obstacle, so the directory is made immutable (chattr +i) instead."""
    d = tmp_path / "locked"
    d.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(d)], check=False, capture_output=True).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i: no way to deny a write")
        undo = ["chattr", "-i", str(d)]
    else:
        d.chmod(0o555)
        undo = ["chmod", "755", str(d)]
    try:
        if os.access(d, os.W_OK):
            pytest.skip("could not make a directory unwritable for this user")
        with pytest.raises(PermissionError):  # a real write fails too: what the check predicts
            (d / "probe").write_text("")
        yield d
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_out_in_an_unwritable_directory(inputs, unwritable_dir, capsys, command):
    argv = _commands(inputs, unwritable_dir.name)[command]
    before = _listing(inputs)
    rc, err = run_cli(capsys, *argv)
    option = command.split()[-1]
    assert_one_line_error(rc, err, f"parameter '{option}'", f"'{unwritable_dir}' is not writable")
    assert _listing(inputs) == before


@pytest.mark.parametrize("command", ["simulate", "show", "import folder", "export"])
def test_out_that_is_an_existing_directory(inputs, capsys, command):
    out = inputs / ("x.png" if command == "show" else "x.parquet" if command == "export" else "x.h5")
    out.mkdir()
    (out / "kept.txt").write_text("mine")
    argv = _commands(inputs, "unused")[f"{command} --out"][:-1] + [out]
    before = _listing(inputs)
    rc, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, "parameter '--out'", f"got '{out}' (an existing directory)")
    assert _listing(inputs) == before


def test_check_output_path_accepts_what_atomic_path_can_write(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper" / "x.h5") == tmp_path / "new" / "deeper" / "x.h5"
    (tmp_path / "old.h5").write_text("an existing file is replaced atomically, so it may be named")
    check_output_path(tmp_path / "old.h5")
    check_output_path(tmp_path, "--dest", directory=True)
    check_output_path("relative.h5")
    with pytest.raises(
        SimganError, match=r"parameter '--dest': expected a directory, got .*old\.h5' \(an existing file\)"
    ):
        check_output_path(tmp_path / "old.h5", "--dest", directory=True)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["import", "folder", "{imgs}", "--size", "35x55", "--out", "{tmp}/x.h5", "--workers", "0"],
            "parameter '--workers': expected a positive integer, got 0",
        ),
        (
            ["import", "folder", "{imgs}", "--size", "35x55", "--out", "{tmp}/x.h5", "--workers", "-3"],
            "parameter '--workers': expected a positive integer, got -3",
        ),
        (
            ["show", "{tmp}/e.h5", "--out", "{tmp}/g.png", "--seed", "-1"],
            "parameter '--seed': expected an integer >= 0, got -1",
        ),
        (
            ["import", "unityeyes", "{imgs}", "--out", "{tmp}/x.h5", "--seed", "-1"],
            "parameter '--seed': expected an integer >= 0",
        ),
        (
            ["import", "kaggle", "{tmp}/e.h5", "--out", "{tmp}/x.h5", "--limit", "-1"],
            "parameter '--limit': expected a positive integer",
        ),
        (
            ["download", "mpiigaze", "--dest", "{tmp}/raw", "--retries", "-1"],
            "parameter '--retries': expected an integer >= 0",
        ),
    ],
)
def test_integer_option_out_of_range(inputs, capsys, argv, needle):
    before = _listing(inputs)
    rc, err = run_cli(capsys, *(a.format(tmp=inputs, imgs=inputs / "imgs") for a in argv))
    assert_one_line_error(rc, err, needle)
    assert _listing(inputs) == before


# ---------------------------------------------------------------------------------------------
# images


def _png_bomb(path: Path, side: int = 13500) -> None:
    """A valid all-black 1-bit PNG of side x side pixels (182M for 13500: over Pillow's limit) in 22 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte, then 8 pixels a byte
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_is_a_bad_image(tmp_path, capsys):
    _png_bomb(_image_folder(tmp_path / "imgs") / "huge.png")
    out = tmp_path / "eyes.h5"
    import_cmd = ["import", "folder", tmp_path / "imgs", "--size", "35x55", "--workers", 1, "--out", out]
    rc, err = run_cli(capsys, *import_cmd)
    lines = err.splitlines()
    assert rc == 2 and "Traceback" not in err, err
    # the list of bad images, then the one error line
    assert lines[-1].startswith("simgan import: error: 1 bad images") and "huge.png" in lines[-1], err
    assert "exceeds limit" in lines[-1] and "--skip-bad" in lines[-1]
    assert not out.exists()
    rc, err = run_cli(capsys, *import_cmd, "--skip-bad")
    assert rc == 0 and err.startswith("skipped 1 bad images") and "huge.png" in err, err
    with open_dataset(out, require_labels=False) as ds:
        assert ds.n == 3


def _gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (20 + 6 * xx + 2 * yy).astype(np.uint8)  # brighter to the right and down: orientation shows


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, ext):
    stored = _gradient(20, 30)  # as the camera's sensor wrote it, 20 x 30
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view (a phone held upright)
    (tmp_path / "imgs").mkdir()
    path = tmp_path / "imgs" / f"photo.{ext}"
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    upright = np.rot90(stored, k=-1)  # 30 x 20, as every viewer shows it
    tol = 6 if ext == "jpg" else 0
    assert np.abs(decode_image(path, "L").astype(int) - upright).max() <= tol  # UnityEyes, NYU
    from simgan.data.importers.folder import FolderConfig, import_folder

    import_folder(tmp_path / "imgs", tmp_path / "f.h5", FolderConfig(size=(30, 20), crop="none", workers=1))
    with open_dataset(tmp_path / "f.h5", require_labels=False) as ds:
        assert np.abs(ds["images"][0].astype(int) - upright).max() <= tol


# ---------------------------------------------------------------------------------------------
# label tables


def _labelled(tmp_path: Path, csv: str) -> tuple[list, Path]:
    _image_folder(tmp_path / "imgs", n=2)
    (tmp_path / "labels.csv").write_text(csv)
    return (
        [
            "import",
            "folder",
            tmp_path / "imgs",
            "--size",
            "35x55",
            "--workers",
            1,
            "--out",
            tmp_path / "x.h5",
            "--labels",
            tmp_path / "labels.csv",
        ],
        tmp_path / "labels.csv",
    )


def test_pandas_index_column_is_refused(tmp_path, capsys):
    # Every column but `file` becomes a regression target, so an index stored as labels/Unnamed: 0
    # would be learnt as one; which unnamed column is "only an index" cannot be told, so: an error.
    df = pd.DataFrame({"file": ["eye0.png", "eye1.png"], "x": [1.5, 2.5]})
    argv, csv = _labelled(tmp_path, df.to_csv())  # pandas' default writes the index, unnamed
    rc, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, str(csv), "column 1 has no name", "index=False")
    df.to_csv(csv, index=False)
    assert run_cli(capsys, *argv)[0] == 0
    with open_dataset(tmp_path / "x.h5") as ds:
        assert list(ds.label_columns()) == ["x"]
    # that CSV read back by pandas and saved as Parquet keeps the index as a column 'Unnamed: 0'
    (tmp_path / "indexed.csv").write_text(df.to_csv())
    pd.read_csv(tmp_path / "indexed.csv").to_parquet(tmp_path / "labels.parquet")
    rc, err = run_cli(capsys, *argv[:-1], tmp_path / "labels.parquet")
    assert_one_line_error(rc, err, "labels.parquet", "column 1 has no name")


def test_duplicate_column_name_is_refused(tmp_path, capsys):
    argv, csv = _labelled(tmp_path, "file,x,x\neye0.png,1,2\neye1.png,3,4\n")
    rc, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, str(csv), "column 'x' appears 2 times", "expected unique names")
    assert not (tmp_path / "x.h5").exists()


def test_header_only_csv_says_no_rows(tmp_path, capsys):
    argv, csv = _labelled(tmp_path, "file,x,y\n")
    rc, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, str(csv), "no rows")
    assert "dtype" not in err


# ---------------------------------------------------------------------------------------------
# params.yaml: a user task's data.<task>.folder, read by stages/prepare.py


def _folder_task(tmp_path: Path, monkeypatch, **folder) -> Path:
    for split in ("synthetic", "real", "real_test"):
        _image_folder(tmp_path / "raw" / split, n=2)
    section = {
        "size": "35x55",
        "color": False,
        **{s: {"dir": f"raw/{s}", "labels": None} for s in ("synthetic", "real", "real_test")},
    }
    section.update(folder)
    params = {
        "tasks": {"gaze": {}, "hand": {}, "mytask": {}},
        "data": {"mytask": {"source": "folder", "folder": section}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "folder, needles",
    [
        ({"color": "false"}, ["'data.mytask.folder.color'", "expected bool", "'false'"]),
        ({"colour": True}, ["'data.mytask.folder.colour'", "unknown", "'color'"]),
        ({"crop": "centre"}, ["'data.mytask.folder.crop'", "expected one of ['center', 'resize', 'none']", "'centre'"]),
        ({"size": "35by55"}, ["'data.mytask.folder.size'", "expected HxW"]),
        # docs/data_sources.md once showed units per split; only data.<task>.folder.units is read
        (
            {"real": {"dir": "raw/real", "labels": None, "units": {"x": "px"}}},
            ["'data.mytask.folder.real.units'", "unknown"],
        ),
    ],
    ids=["quoted false", "misspelt key", "crop centre", "bad size", "units under a split"],
)
def test_folder_params_name_the_key(tmp_path, monkeypatch, folder, needles):
    _folder_task(tmp_path, monkeypatch, **folder)
    with pytest.raises(SimganError) as e:  # a stage prints it as one line, exit status 2
        prepare_main(["mytask"])
    message = str(e.value)
    assert message.startswith("params.yaml: key ") and "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    assert not (tmp_path / "data").exists()  # checked before the first split was imported


def test_folder_params_valid_ones_import(tmp_path, monkeypatch, capsys):
    _folder_task(tmp_path, monkeypatch, color=True, crop="resize")
    prepare_main(["mytask"])
    for split in ("synthetic", "real", "real_test"):
        with open_dataset(tmp_path / "data" / "mytask" / f"{split}.h5", require_labels=False) as ds:
            assert ds["images"].shape == (2, 35, 55, 3) and ds.attrs["crop"] == "resize"


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM of a parallel `simgan simulate`


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    "sig, to_group, status, line",
    [
        (signal.SIGINT, True, 130, "simgan simulate: interrupted"),  # Ctrl-C: the terminal signals the whole group
        (signal.SIGTERM, False, 143, "simgan simulate: interrupted (SIGTERM)"),  # kill PID, as a scheduler does
        (signal.SIGTERM, True, 143, "simgan simulate: interrupted (SIGTERM)"),
    ],
)
def test_interrupted_simulate_leaves_one_line_and_no_temp_file(tmp_path, sig, to_group, status, line):
    out = _eyes_file(tmp_path / "x.h5")
    before = out.read_bytes()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "simgan.cli",
        "simulate",
        "eyes",
        "--n",
        "200000",
        "--seed",
        "0",
        "--out",
        str(out),
        "--workers",
        "2",
        "--chunk",
        "256",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        # the first chunks are in the temp file: the workers are busy rendering the next ones
        while not any(p.stat().st_size > 1 << 20 for p in tmp_path.glob(".x.h5.*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == status, err
    assert err.strip() == line, err  # no worker tracebacks, no BrokenPipeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]  # temp file removed
    assert out.read_bytes() == before
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):  # the workers went with it
        assert time.monotonic() < deadline, "worker processes outlived the interrupted command"
        time.sleep(0.1)


def test_interrupt_dropped_inside_a_finalizer_is_delivered_again():
    # Python prints an exception raised in a __del__ or weakref callback as "Exception ignored" and
    # goes on; a SIGTERM landing there once let a parallel simulate run on to the end.
    class Finalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the signal arrives while the finalizer runs
            sum(range(1000))  # bytecodes: the handler runs here, inside __del__

    with pytest.raises(Terminated), _interruptible():
        Finalizer()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_help_says_what_simgan_is_and_version_prints_the_installed_one(capsys):
    from importlib.metadata import version

    from simgan.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "S+U learning" in out and "make repro" in out and "simgan COMMAND --help" in out
    assert "registers its own subcommand" not in out  # the developer docstring stays out of --help
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"simgan {version('simgan')}\n"


def _option_help(capsys, argv, option: str) -> str:
    """What `simgan ARGV --help` says of `option`: its entry in the options list, as one line."""
    from simgan.cli import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+{re.escape(option)}\b", line))
    stop = next((i for i in range(start + 1, len(lines)) if re.match(r"\s+-|\S", lines[i])), len(lines))
    return " ".join(" ".join(lines[start:stop]).split())


@pytest.mark.parametrize(
    "argv, option, needle",
    [
        (("simulate",), "--seed", "seed of every random draw"),
        (("simulate",), "--domain", "surrogate real domain"),
        (("show",), "--seed", "which rows to draw"),
        (("import", "folder"), "--crop", "centred window"),
        (("import", "folder"), "--domain", "simulator renders"),
        (("import", "folder"), "--size", "the size every image has"),
        (("import", "kaggle"), "--domain", "the file's domain"),
        (("params", "apply"), "--params", "the params file to rewrite"),
        (("export",), "--images", "PNG"),
        (("export",), "--overwrite", "non-empty"),
    ],
)
def test_every_option_the_user_asked_about_has_help(capsys, argv, option, needle):
    assert needle in _option_help(capsys, argv, option)
