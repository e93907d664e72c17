"""Stage `prepare@<task>`: the task's three data sets.

    data/<task>/synthetic.h5   labelled simulator images (the refiner's input)
    data/<task>/real.h5        real images: unlabeled for the GAN; their labels train only the
                               "real" reference estimator
    data/<task>/real_test.h5   held-out real images; labels used only by evaluate

`data.<task>.source` picks the embedded simulators (default) or an importer of a public data set
(docs/data_sources.md); importers run through the same `simgan import` commands a user would type.
A task of the user's own (params.yaml `tasks`) has one source: folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from simgan.cli import main as simgan_main
from simgan.config import ParamsError, one_of, positive
from simgan.io import SimganError, write_text_atomic
from stages.common import TASK_ARG, Params, check_task, data_path, run_stage

SOURCES = {"gaze": ("embedded", "kaggle", "unityeyes+mpiigaze", "folder"), "hand": ("embedded", "nyu", "folder")}
USER_TASK_SOURCES = ("folder",)
# Each split's seed is derived from the task's seed, so the three sets never share a draw.
SPLIT_SEED_OFFSET = {"synthetic": 0, "real": 1000, "real_test": 2000}


def simulate(task: str, p: Params) -> None:
    key = f"data.{task}"
    seed = p.get(f"{key}.seed", int)
    workers = p.get(f"{key}.workers", int, positive)
    for split, domain in (("synthetic", "synthetic"), ("real", "real"), ("real_test", "real")):
        n = p.get(f"{key}.{split}_n", int, positive)
        out = data_path(task, split)
        print(f"prepare {task}: simulating {n} {domain} images -> {out}", flush=True)
        if task == "gaze":
            from simgan.sim.eyes import simulate_eyes_to_file

            simulate_eyes_to_file(out, n, seed + SPLIT_SEED_OFFSET[split], domain=domain, workers=workers)
        else:
            from simgan.sim.hands import simulate_hands_to_file

            size = p.get(f"{key}.size", int, lambda v: None if v >= 16 else ">= 16")
            simulate_hands_to_file(out, n, seed + SPLIT_SEED_OFFSET[split], domain=domain, size=size, workers=workers)


def _run(args: list[str]) -> None:
    print("prepare: simgan " + " ".join(args), flush=True)
    rc = simgan_main(args)
    if rc:
        raise ParamsError(f"prepare: `simgan {' '.join(args)}` failed with exit status {rc}")


# Each source's raw inputs: a slot of data/<task>/inputs/ -> the key (under data.<task>) naming the
# file or folder it stands for; a `labels` key may be null (an unlabeled split). All are checked
# before the first import runs, so a typo in the third path cannot leave the first split
# re-imported and the others stale.
#
# DVC tracks them through these slots: dvc.yaml cannot name the selected source's paths itself (its
# templating has no nested `${data.${key}.<source>...}`, DVC issue #5167, and a list cannot be
# interpolated into `deps`), so prepare@<task> depends on the six slots and the `inputs` stage makes
# each one a symlink to the path the params give (an empty folder where the source has none, as
# embedded everywhere). DVC hashes a dependency through its symlink: a linked file's bytes, a linked
# folder's files (measured with DVC 3.67: a relabelled or deleted image shows prepare as changed).
INPUT_SLOTS = ("synthetic", "synthetic_labels", "real", "real_labels", "real_test", "real_test_labels")
SOURCE_INPUTS = {
    "embedded": {},
    "kaggle": {"synthetic": "kaggle.synthetic", "real": "kaggle.real", "real_test": "kaggle.real_test"},
    "unityeyes+mpiigaze": {"synthetic": "unityeyes.dir", "real": "mpiigaze.dir", "real_test": "mpiigaze.dir"},
    "nyu": {"synthetic": "nyu.dir", "real": "nyu.dir", "real_test": "nyu.dir"},
    "folder": {
        f"{split}{part}": f"folder.{split}.{key}"
        for split in ("synthetic", "real", "real_test")
        for part, key in (("", "dir"), ("_labels", "labels"))
    },
}


def selected_source(task: str, p: Params) -> str:
    return p.get(f"data.{task}.source", str, one_of(*SOURCES.get(task, USER_TASK_SOURCES)))


def input_paths(task: str, source: str, p: Params) -> dict[str, str | None]:
    """Slot -> the path params name for it (None: the slot is unused), each path checked to exist."""
    paths = {}
    for slot, key in SOURCE_INPUTS[source].items():
        key = f"data.{task}.{key}"
        unlabeled = slot.endswith("_labels") and p.raw(key, None) is None
        path = None if unlabeled else p.get(key, str)
        if path is not None and not Path(path).exists():
            raise ParamsError(
                f"{p.path}: key '{key}': expected an existing path for data.{task}.source '{source}', got {path!r} (not found)"
            )
        paths[slot] = path
    return {slot: paths.get(slot) for slot in INPUT_SLOTS}


def inputs_dir(task: str) -> Path:
    return Path("data") / task / "inputs"


def link_inputs(task: str, p: Params) -> dict:
    """The `inputs` stage: data/<task>/inputs/<slot> -> the selected source's raw inputs (relative
    links for relative paths, so a moved repository keeps them), replaced as a whole; a slot whose
    path an earlier slot already links (nyu's one folder, MPIIGaze for real and real_test) stays an
    empty folder, so DVC hashes a large folder once. Returns the manifest, the stage's output:
    the source and each slot's linked path (null for an empty slot)."""
    source = selected_source(task, p)
    paths = input_paths(task, source, p)
    folder = inputs_dir(task)
    folder.parent.mkdir(parents=True, exist_ok=True)
    present = folder.exists() or folder.is_symlink()
    if present:
        _check_links_folder(folder)
    for stale in folder.parent.glob(".inputs.*"):  # left by an interrupted run (DVC runs one at a time)
        _remove_links(stale)
    tmp = folder.with_name(f".inputs.{os.getpid()}.tmp")
    tmp.mkdir()
    seen = set()
    for slot, path in paths.items():
        real = os.path.realpath(path) if path is not None else None
        if real is None or real in seen:
            (tmp / slot).mkdir()
            paths[slot] = None
            continue
        seen.add(real)
        target = path if Path(path).is_absolute() else os.path.relpath(path, folder)
        try:
            os.symlink(target, tmp / slot)
        except OSError as e:  # e.g. Windows without the symlink privilege
            raise SimganError(
                f"{tmp / slot}: cannot create a symlink to {path!r} ({e}); DVC tracks the raw inputs through it"
            ) from None
    old = folder.with_name(f".inputs.{os.getpid()}.old")
    if present:
        folder.rename(old)
    tmp.rename(folder)
    _remove_links(old)
    manifest = {"source": source, "inputs": paths}
    write_text_atomic(folder.with_suffix(".json"), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _check_links_folder(folder: Path) -> None:
    """`folder` holds only what link_inputs writes: symlinks and empty folders. Anything else was
    put there by hand and is not this stage's to delete."""
    ours = (
        folder.is_dir()
        and not folder.is_symlink()
        and all(e.is_symlink() or (e.is_dir() and not any(e.iterdir())) for e in folder.iterdir())
    )
    if not ours:
        raise SimganError(
            f"{folder}: expected the folder of input links the inputs stage writes (symlinks and empty folders), "
            "found other files; move them elsewhere"
        )


def _remove_links(folder: Path) -> None:
    """Remove a folder link_inputs made: its symlinks and empty folders only, never what a link
    points to."""
    if not folder.exists() and not folder.is_symlink():
        return
    _check_links_folder(folder)
    for entry in folder.iterdir():
        if entry.is_symlink():
            entry.unlink()
        else:
            entry.rmdir()
    folder.rmdir()


FOLDER_SPLITS = ("synthetic", "real", "real_test")
FOLDER_KEYS = ("size", "color", "crop", "units") + FOLDER_SPLITS
FOLDER_SPLIT_KEYS = ("dir", "labels")


def check_folder_keys(key: str, p: Params) -> None:
    """data.<task>.folder, checked before the first import: a misspelt key (`colour: true`) would
    be ignored, a quoted 'false' would count as true, and a bad crop would be argparse's usage
    text naming --crop instead of the key."""
    from simgan.data.importers import parse_size
    from simgan.data.importers.folder import CROPS

    for where, known in [(key, FOLDER_KEYS)] + [(f"{key}.{split}", FOLDER_SPLIT_KEYS) for split in FOLDER_SPLITS]:
        for name in p.get(where, dict):
            if name not in known:
                raise ParamsError(f"{p.path}: key '{where}.{name}': unknown; expected one of {list(known)}")
    if p.raw(f"{key}.color", None) is not None:
        p.get(f"{key}.color", bool)
    if p.raw(f"{key}.crop", None) is not None:
        p.get(f"{key}.crop", str, one_of(*CROPS))
    parse_size(p.get(f"{key}.size", str), where=f"{p.path}: key '{key}.size'")


def import_sources(task: str, source: str, p: Params) -> None:
    key = f"data.{task}.{source}"
    syn, real, test = (str(data_path(task, s)) for s in ("synthetic", "real", "real_test"))
    if source == "kaggle":
        _run(["import", "kaggle", p.get(f"{key}.synthetic", str), "--out", syn, "--domain", "synthetic"])
        _run(["import", "kaggle", p.get(f"{key}.real", str), "--out", real, "--domain", "real"])
        _run(["import", "kaggle", p.get(f"{key}.real_test", str), "--out", test, "--domain", "real"])
    elif source == "unityeyes+mpiigaze":
        ue, mpii = f"data.{task}.unityeyes", f"data.{task}.mpiigaze"
        _run(["import", "mpiigaze", p.get(f"{mpii}.dir", str), "--subset", "rest", "--out", real])
        _run(["import", "mpiigaze", p.get(f"{mpii}.dir", str), "--subset", "eval", "--out", test])
        _run(["import", "unityeyes", p.get(f"{ue}.dir", str), "--out", syn])
    elif source == "nyu":
        d = p.get(f"{key}.dir", str)
        size = str(p.get(f"data.{task}.size", int))
        _run(["import", "nyu", d, "--split", "train", "--size", size, "--out-synthetic", syn, "--out-real", real])
        _run(["import", "nyu", d, "--split", "test", "--size", size, "--out-real", test])
    elif source == "folder":
        check_folder_keys(key, p)
        size = p.get(f"{key}.size", str)
        for split, out in (("synthetic", syn), ("real", real), ("real_test", test)):
            args = ["import", "folder", p.get(f"{key}.{split}.dir", str), "--out", out, "--size", size]
            labels = p.raw(f"{key}.{split}.labels", None)
            if labels:
                args += ["--labels", str(labels)]
            if split != "synthetic":
                args += ["--domain", "real"]
            if p.raw(f"{key}.color", False):
                args.append("--color")
            crop, units = p.raw(f"{key}.crop", None), p.raw(f"{key}.units", None)
            if crop:
                args += ["--crop", str(crop)]
            if units and labels:  # units name label columns: an unlabeled split has none
                args += [
                    "--units",
                    ",".join(f"{k}={v}" for k, v in units.items()) if isinstance(units, dict) else str(units),
                ]
            _run(args)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.prepare {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    source = selected_source(task, p)
    if source == "embedded":
        simulate(task, p)
    else:
        input_paths(task, source, p)
        import_sources(task, source, p)


if __name__ == "__main__":
    run_stage(main)
