"""Importer throughput (images/s): the folder importer on PNG files and the Kaggle eye-gaze importer
on an HDF5 file of per-sample datasets, both written here so the benchmark runs offline.

    .venv/bin/python -m benchmarks.bench_importers [--n 2000] [--repeats 3] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from benchmarks.common import interleaved, load, machine, summary, table, write_result


def write_inputs(tmp: Path, n: int) -> tuple[Path, Path]:
    from simgan.sim.eyes import render_eyes

    eyes = render_eyes(n, seed=0, domain="synthetic", workers=1)
    folder = tmp / "pngs"
    folder.mkdir()
    for i, img in enumerate(eyes["images"]):
        Image.fromarray(img).save(folder / f"{i}.png")
    kaggle = tmp / "gaze.h5"
    # the Kaggle layout: one 35x55 dataset per sample inside the `image` group, look vectors in
    # UnityEyes convention (x negated relative to ours, a 4th homogeneous component)
    look = np.concatenate([eyes["gaze"] * np.array([-1, 1, 1]), np.zeros((n, 1))], axis=1)
    with h5py.File(kaggle, "w") as f:
        group = f.create_group("image")
        for i, img in enumerate(eyes["images"]):
            group.create_dataset(str(i), data=img)
        f["look_vec"] = look
    return folder, kaggle


def run(n: int = 2000, repeats: int = 3, workers=(1, 2)) -> dict:
    from simgan.data.importers.folder import FolderConfig, import_folder
    from simgan.data.importers.kaggle import import_kaggle

    load_before = load()
    with tempfile.TemporaryDirectory(prefix="bench_importers_") as tmp_name:
        tmp = Path(tmp_name)
        folder, kaggle = write_inputs(tmp, n)
        fns = {
            f"folder_w{w}": (
                lambda w=w: import_folder(
                    folder, tmp / f"folder_w{w}.h5", FolderConfig(size=(35, 55), crop="none", workers=w)
                )
            )
            for w in workers
        }
        fns["kaggle"] = lambda: import_kaggle(kaggle, tmp / "kaggle.h5")
        times = interleaved(fns, repeats)
    rows = [{"importer": name, "n": n, **{k: v for k, v in summary(t, n).items()}} for name, t in times.items()]
    for r in rows:
        r["images_per_s"] = r.pop("per_s")
    report = {
        "machine": machine(),
        "load_before": load_before,
        "load_after": load(),
        "repeats": repeats,
        "results": rows,
    }
    print(
        table(
            rows,
            [
                ("importer", "importer", "s"),
                ("n", "N", "d"),
                ("median_s", "s", ".2f"),
                ("images_per_s", "img/s", ".0f"),
            ],
        )
    )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result("importers", report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = p.parse_args(argv)
    run(a.n, a.repeats, tuple(a.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
