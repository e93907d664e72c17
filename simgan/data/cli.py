"""`simgan import ...`, `simgan download ...` and `simgan export ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simgan.io import SimganError, check_output_path, require_at_least


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in degrees, got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"expected MIN <= MAX, got {text!r}")
    return lo, hi


def _persons(text: str) -> list[str]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if not (p.startswith("p") and p[1:].isdigit())]
    if not out or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list like p00,p01, got {text!r}")
    return out


def _h5_out(text: str) -> Path:
    if Path(text).suffix.lower() not in (".h5", ".hdf5"):
        raise argparse.ArgumentTypeError(f"expected a .h5 file name, got {text!r}")
    return Path(text)


def _common(p: argparse.ArgumentParser, out: bool = True, bad: bool = True, workers: bool = True) -> None:
    if out:
        p.add_argument("--out", type=_h5_out, required=True, help="data set file to write (.h5)")
    if bad:
        p.add_argument(
            "--skip-bad", action="store_true", help="leave out unreadable inputs (listed) instead of failing"
        )
        p.add_argument("--report", type=Path, help="write the list of bad inputs to this text file")
    if workers:
        p.add_argument("--workers", type=int, help="worker processes (default: all cores)")


# The smallest value of each integer option of these commands (a negative --seed is numpy's
# ValueError, --workers 0 the pool's, --retries -1 a download that never tries).
_INT_MINIMUM = {"workers": 1, "limit": 1, "resample_n": 1, "bins": 1, "size": 1, "seed": 0, "retries": 0}
_OUTPUT_FILES = ("out", "out_synthetic", "out_real", "report")


def _checked(run):
    """`run` after the checks every data command makes before any work: integer options in range,
    each output file writable (simgan.io.check_output_path), --dest a writable folder."""

    def checked_run(a) -> int:
        for name, minimum in _INT_MINIMUM.items():
            value = getattr(a, name, None)
            if isinstance(value, int):
                require_at_least("--" + name.replace("_", "-"), value, minimum)
        for name in _OUTPUT_FILES:
            if getattr(a, name, None) is not None:
                check_output_path(getattr(a, name), "--" + name.replace("_", "-"))
        if getattr(a, "dest", None) is not None:
            check_output_path(a.dest, "--dest", directory=True)
        return run(a)

    return checked_run


def _print_written(n: int, *paths) -> None:
    print(f"wrote {n} rows to {', '.join(str(p) for p in paths if p is not None)}")


def _run_unityeyes(a) -> int:
    from simgan.data.importers.unityeyes import UnityEyesConfig, import_unityeyes

    cfg = UnityEyesConfig(
        crop_scale=a.crop_scale,
        head_pitch=a.head_pitch,
        head_yaw=a.head_yaw,
        resample=a.resample,
        resample_n=a.resample_n,
        bins=a.bins,
        seed=a.seed,
        limit=a.limit,
        workers=a.workers,
        skip_bad=a.skip_bad,
        report=a.report,
    )
    _print_written(import_unityeyes(a.src, a.out, cfg), a.out)
    return 0


def _run_mpiigaze(a) -> int:
    from simgan.data.importers.mpiigaze import MPIIGazeConfig, import_mpiigaze

    cfg = MPIIGazeConfig(
        subset=a.subset,
        persons=a.persons,
        eyes=a.eyes,
        mirror_right=not a.no_mirror,
        fit=a.fit,
        labels=not a.unlabeled,
        workers=a.workers,
    )
    _print_written(import_mpiigaze(a.src, a.out, cfg), a.out)
    return 0


def _run_kaggle(a) -> int:
    from simgan.data.importers.kaggle import import_kaggle

    _print_written(import_kaggle(a.src, a.out, domain=a.domain, limit=a.limit), a.out)
    return 0


def _run_nyu(a) -> int:
    from simgan.data.importers.nyu import NYUConfig, import_nyu

    if a.out_synthetic is None and a.out_real is None:
        raise SimganError("import nyu: expected --out-synthetic and/or --out-real")
    cfg = NYUConfig(
        split=a.split,
        camera=a.camera,
        size=a.size,
        half_range_mm=a.half_range_mm,
        pad=a.pad,
        limit=a.limit,
        workers=a.workers,
        skip_bad=a.skip_bad,
        report=a.report,
    )
    _print_written(import_nyu(a.src, a.out_synthetic, a.out_real, cfg), a.out_synthetic, a.out_real)
    return 0


def _run_folder(a) -> int:
    from simgan.data.importers import parse_size
    from simgan.data.importers.folder import FolderConfig, import_folder, parse_units

    cfg = FolderConfig(
        size=None if a.size is None else parse_size(a.size),
        color=a.color,
        crop=a.crop,
        labels=a.labels,
        units=parse_units(a.units),
        domain=a.domain,
        workers=a.workers,
        skip_bad=a.skip_bad,
        report=a.report,
    )
    _print_written(import_folder(a.src, a.out, cfg), a.out)
    return 0


def _run_download(a) -> int:
    from simgan.data.download import fetch

    archive, files = fetch(
        a.name, a.dest, a.registry, extract=not a.no_extract, retries=a.retries, progress=sys.stderr.isatty()
    )
    print(f"{archive}: verified; extracted {len(files)} files under {a.dest}")
    return 0


def _run_export(a) -> int:
    from simgan.data.export import check_images_dir, export_images, export_labels

    if a.out is None and a.images is None:
        raise SimganError("export: expected --out FILE.parquet (the labels) and/or --images DIR (PNGs + labels.csv)")
    if a.overwrite and a.images is None:
        raise SimganError("--overwrite: applies to --images DIR only")
    if a.images is not None:
        check_output_path(a.images, "--images", directory=True)
        check_images_dir(a.images, a.overwrite)
    if a.out is not None:
        n = export_labels(a.src, a.out)
        print(f"wrote {n} rows to {a.out}")
    if a.images is not None:
        n = export_images(a.src, a.images, overwrite=a.overwrite)
        print(f"wrote {n} images and labels.csv to {a.images}")
    return 0


def register(subparsers) -> None:
    imp = subparsers.add_parser("import", help="convert a public data set into the project's HDF5 format")
    isub = imp.add_subparsers(dest="source", required=True, metavar="SOURCE")

    p = isub.add_parser("unityeyes", help="UnityEyes renders (imgs/N.jpg + N.json) -> synthetic gaze")
    p.add_argument(
        "src", type=Path, help="UnityEyes' output folder (the one holding imgs/) or imgs/ itself: N.jpg + N.json"
    )
    _common(p)
    p.add_argument("--crop-scale", type=float, default=2.5, help="crop width in eye widths (default 2.5)")
    p.add_argument(
        "--head-pitch",
        type=_range,
        metavar="MIN,MAX",
        help="keep head pitch in this range (deg); write --head-pitch=-30,30 when MIN is negative",
    )
    p.add_argument("--head-yaw", type=_range, metavar="MIN,MAX", help="keep head yaw in this range (deg)")
    p.add_argument("--resample", metavar="uniform|FILE.h5", help="resample to a uniform gaze histogram or to FILE's")
    p.add_argument("--resample-n", type=int, help="images to draw when resampling (default: as many as kept)")
    p.add_argument("--bins", type=int, default=12, help="histogram bins per axis for --resample (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling draw")
    p.add_argument("--limit", type=int, help="only the first N renders")
    p.set_defaults(func=_checked(_run_unityeyes))

    p = isub.add_parser("mpiigaze", help="MPIIGaze Data/Normalized -> real gaze")
    p.add_argument("src", type=Path, help="the MPIIGaze folder (holding Data/Normalized and Evaluation Subset)")
    _common(p, bad=False)
    p.add_argument(
        "--subset",
        choices=("all", "eval", "rest"),
        default="all",
        help="eval = the Evaluation Subset (labelled test set); rest = all but it",
    )
    p.add_argument("--persons", type=_persons, help="comma-separated, e.g. p00,p01 (default: all)")
    p.add_argument("--eyes", choices=("both", "left", "right"), default="both", help="which eyes (default both)")
    p.add_argument("--no-mirror", action="store_true", help="do not mirror right eyes into left ones")
    p.add_argument("--fit", choices=("crop", "resize"), default="crop", help="36x60 -> 35x55 (default crop)")
    p.add_argument("--unlabeled", action="store_true", help="write images only")
    p.set_defaults(func=_checked(_run_mpiigaze))

    p = isub.add_parser("kaggle", help="Kaggle eye-gaze gaze.h5 / real_gaze.h5 -> gaze")
    p.add_argument("src", type=Path, help="gaze.h5 or real_gaze.h5")
    _common(p, bad=False, workers=False)
    p.add_argument(
        "--domain",
        choices=("synthetic", "real"),
        help="the file's domain (default: real for real*.h5, else synthetic)",
    )
    p.add_argument("--limit", type=int, help="only the first N images")
    p.set_defaults(func=_checked(_run_kaggle))

    p = isub.add_parser("nyu", help="NYU hand pose -> synthetic (synthdepth) and real (masked depth) hand sets")
    p.add_argument("src", type=Path, help="the NYU 'dataset' folder (holding train/ and test/)")
    _common(p, out=False)
    p.add_argument("--out-synthetic", type=_h5_out, help="synthetic data set to write (.h5)")
    p.add_argument("--out-real", type=_h5_out, help="real data set to write (.h5)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="NYU's train or test split")
    p.add_argument("--camera", type=int, choices=(1, 2, 3), default=1, help="1 = front (default)")
    p.add_argument("--size", type=int, default=64, help="crop side in pixels (paper 224; default 64)")
    p.add_argument("--half-range-mm", type=float, default=150.0, help="depth mapped to [-1, 1] around the hand")
    p.add_argument("--pad", type=float, default=0.15, help="box margin per side, as a fraction of the hand's extent")
    p.add_argument("--limit", type=int, help="only the first N frames")
    p.set_defaults(func=_checked(_run_nyu))

    p = isub.add_parser("folder", help="a folder of images (+ labels table) -> generic data set")
    p.add_argument("src", type=Path, help="folder of images (searched recursively)")
    _common(p)
    p.add_argument(
        "--size",
        metavar="HxW",
        help="stored image size, e.g. 35x55 (default: the size every image has; required when they differ)",
    )
    p.add_argument("--labels", type=Path, help="CSV or Parquet with a 'file' column and numeric label columns")
    p.add_argument("--units", metavar="a=deg,b=px", help="units of the label columns")
    p.add_argument("--color", action="store_true", help="keep RGB (default grayscale)")
    p.add_argument(
        "--crop",
        choices=("center", "none", "resize"),
        default="center",
        help="fitting to --size: center crops the centred window of that aspect and area-resizes (default); "
        "resize squeezes the whole image; none requires the exact size",
    )
    p.add_argument(
        "--domain",
        choices=("synthetic", "real"),
        help="the file's domain: synthetic (simulator renders) or real (default: synthetic with --labels, else real)",
    )
    p.set_defaults(func=_checked(_run_folder))

    p = subparsers.add_parser("download", help="fetch a public data set (resumable, sha256-verified)")
    p.add_argument("name", help="registry entry, e.g. mpiigaze or nyu")
    p.add_argument("--dest", type=Path, default=Path("data/raw"), help="folder for the archive and its files")
    p.add_argument("--registry", type=Path, help="YAML that extends/overrides the built-in registry")
    p.add_argument("--no-extract", action="store_true", help="download and verify only")
    p.add_argument("--retries", type=int, default=3, help="resume attempts after a dropped connection")
    p.set_defaults(func=_checked(_run_download))

    p = subparsers.add_parser(
        "export",
        help="write a data set's labels to Parquet and/or its images as PNG files",
        description="--out writes the labels to Parquet (one row per image); --images DIR writes every "
        "image as DIR/<its file name>.png (the names the folder import stored, subfolders kept; "
        "zero-padded row numbers otherwise) and DIR/labels.csv with a `file` column.",
    )
    p.add_argument("src", type=Path, help="data set file (.h5), e.g. data/mytask/refined/seed0.h5")
    p.add_argument("--out", type=Path, help="labels file to write (.parquet)")
    p.add_argument("--images", type=Path, metavar="DIR", help="folder to write the images (PNG) and labels.csv into")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --images folder")
    p.set_defaults(func=_checked(_run_export))
