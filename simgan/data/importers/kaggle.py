"""Kaggle "eye-gaze" (4quant) `gaze.h5` / `real_gaze.h5` -> gaze data set.

`image` is an HDF5 group holding one 35x55 uint8 dataset per sample. Its members are stacked in
natural order of their names (digit runs compared as numbers: "9" < "10"; identical to plain
sorting for zero-padded names), and row i of `look_vec` labels the i-th name in that order.
`look_vec` rows are UnityEyes look vectors, converted like the UnityEyes importer (x negated,
unit length). A file without `look_vec` (real_gaze.h5) becomes an unlabeled real data set.
Nothing else is assumed about the file; `path` is not needed.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from simgan.data.format import GAZE_IMAGE_SHAPE, DatasetWriter
from simgan.data.importers import base_attrs, natural_key, unity_look_to_mpii
from simgan.io import SimganError

_BLOCK = 4096


def infer_domain(path: Path) -> str:
    return "real" if path.name.lower().startswith("real") else "synthetic"


def import_kaggle(src: str | Path, out: str | Path, domain: str | None = None, limit: int | None = None) -> int:
    """domain None: "real" for files named real*.h5, else "synthetic"."""
    src = Path(src)
    domain = domain or infer_domain(src)
    if domain not in ("synthetic", "real"):
        raise SimganError(f"--domain: expected synthetic or real, got {domain!r}")
    try:
        f = h5py.File(src, "r")
    except FileNotFoundError:
        raise SimganError(f"{src}: file not found; expected a Kaggle eye-gaze .h5") from None
    except OSError as e:
        raise SimganError(f"{src}: not a readable HDF5 file ({e})") from None
    with f:
        group = f.get("image")
        if not isinstance(group, h5py.Group):
            what = "missing" if group is None else "a dataset, expected a group of per-sample datasets"
            raise SimganError(f"{src}: key 'image': {what}")
        names = sorted(group.keys(), key=natural_key)[:limit]
        if not names:
            raise SimganError(f"{src}: key 'image': the group is empty")
        gaze = None
        if "look_vec" in f:
            look = np.asarray(f["look_vec"][()], dtype=np.float64)
            n_all = len(group)
            if look.ndim != 2 or look.shape[1] < 3 or len(look) != n_all:
                raise SimganError(
                    f"{src}: key 'look_vec': expected ({n_all}, 3 or 4) rows matching key 'image', got {look.shape}"
                )
            gaze = unity_look_to_mpii(look[: len(names)], f"{src}: key 'look_vec'")
        elif domain == "synthetic":
            raise SimganError(f"{src}: key 'look_vec' missing; a synthetic file needs gaze labels (use --domain real)")
        attrs = base_attrs("gaze", domain, "kaggle", image_order="natural sort of image/ member names")
        with DatasetWriter(out, attrs, require_labels=gaze is not None) as w:
            for start in range(0, len(names), _BLOCK):
                block = names[start : start + _BLOCK]
                imgs = np.empty((len(block),) + GAZE_IMAGE_SHAPE, np.uint8)
                for j, name in enumerate(block):
                    ds = group[name]
                    if not isinstance(ds, h5py.Dataset) or ds.shape != GAZE_IMAGE_SHAPE or ds.dtype != np.uint8:
                        shape = getattr(ds, "shape", "a group")
                        raise SimganError(
                            f"{src}: key 'image/{name}': expected uint8 {GAZE_IMAGE_SHAPE}, got "
                            f"{getattr(ds, 'dtype', '')} {shape}"
                        )
                    try:
                        ds.read_direct(imgs, dest_sel=np.s_[j])
                    except OSError as e:
                        raise SimganError(f"{src}: key 'image/{name}': unreadable ({e})") from None
                arrays = {"images": imgs}
                if gaze is not None:
                    arrays["gaze"] = gaze[start : start + len(block)]
                w.append(arrays)
    return len(names)
