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

from pathlib import Path

from simgan.cli import main as simgan_main
from simgan.config import ParamsError, one_of, positive
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


# The params keys naming each importer's inputs; all are checked before the first import runs, so a
# typo in the third path cannot leave the first split re-imported and the others stale.
INPUT_KEYS = {
    "kaggle": ("kaggle.synthetic", "kaggle.real", "kaggle.real_test"),
    "unityeyes+mpiigaze": ("unityeyes.dir", "mpiigaze.dir"),
    "nyu": ("nyu.dir",),
    "folder": ("folder.synthetic.dir", "folder.real.dir", "folder.real_test.dir"),
}


def check_inputs(task: str, source: str, p: Params) -> None:
    for key in INPUT_KEYS[source]:
        key = f"data.{task}.{key}"
        path = p.get(key, str)
        if not Path(path).exists():
            raise ParamsError(f"{p.path}: key '{key}': expected an existing path for data.{task}.source '{source}', got {path!r} (not found)")


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
                args += ["--units", ",".join(f"{k}={v}" for k, v in units.items()) if isinstance(units, dict) else str(units)]
            _run(args)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.prepare {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    source = p.get(f"data.{task}.source", str, one_of(*SOURCES.get(task, USER_TASK_SOURCES)))
    if source == "embedded":
        simulate(task, p)
    else:
        check_inputs(task, source, p)
        import_sources(task, source, p)


if __name__ == "__main__":
    run_stage(main)
