"""The gaze CNN (GazeNet) and, for a task of the user's own images ("generic"), its backbone
regressing every numeric label column (RegressionNet), each with its label preparation, loss and
output decoding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simgan.data.format import LABELS_GROUP
from simgan.estimators.base import EstimatorNet, checked_labels
from simgan.io import SimganError


class GazeNet(EstimatorNet):
    """The paper's gaze CNN: conv3x3 32, 32, 64, maxpool3x3/2, conv3x3 80, 192, maxpool2x2/2,
    FC(flattened) -> fc -> 3.

    Convolutions are unpadded: that is what makes the paper's "FC 9600" come out exactly
    (192 x 5 x 10 for a 35 x 55 input). Channel counts scale with `width` (CPU default 0.5).
    The output is an unnormalized 3-D vector trained with L2 against the unit label.

    `outputs` and `pool` exist for RegressionNet: the head's size, and an optional adaptive average
    pool to (h, w) before the FC layer, which keeps the FC small on large images (unpadded convs
    leave about H/4 x W/4 cells: 96 x 150 for a 400 x 600 photo)."""

    task = "gaze"

    def __init__(
        self,
        width: float = 1.0,
        in_channels: int = 1,
        in_hw: Sequence[int] = (35, 55),
        fc: int = 1000,
        batchnorm: bool = False,
        outputs: int = 3,
        pool: Sequence[int] | None = None,
    ):
        super().__init__()
        if not (width > 0):
            raise ValueError(f"width: expected > 0, got {width}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels: expected >= 1, got {in_channels}")
        if int(fc) < 1:
            raise ValueError(f"fc: expected >= 1, got {fc}")
        if int(outputs) < 1:
            raise ValueError(f"outputs: expected >= 1, got {outputs}")
        in_hw = tuple(int(v) for v in in_hw)
        if len(in_hw) != 2 or min(in_hw) < 15:
            raise ValueError(f"in_hw: expected (H, W) with both >= 15 (valid convs + pools), got {in_hw}")
        if pool is not None:
            pool = [int(v) for v in pool]
            if len(pool) != 2 or min(pool) < 1:
                raise ValueError(f"pool: expected null or (h, w) with both >= 1, got {pool}")
        self.net_kwargs = dict(
            width=float(width),
            in_channels=int(in_channels),
            in_hw=list(in_hw),
            fc=int(fc),
            batchnorm=bool(batchnorm),
            outputs=int(outputs),
            pool=pool,
        )
        ch = [max(1, round(c * width)) for c in (32, 32, 64, 80, 192)]

        def conv(cin, cout):
            layers = [nn.Conv2d(cin, cout, 3, bias=not batchnorm)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            return layers

        self.conv = nn.Sequential(
            *conv(in_channels, ch[0]),
            *conv(ch[0], ch[1]),
            *conv(ch[1], ch[2]),
            nn.MaxPool2d(3, 2),
            *conv(ch[2], ch[3]),
            *conv(ch[3], ch[4]),
            nn.MaxPool2d(2, 2),
            # parameter-free and last, so the conv layers' state_dict keys are the same either way
            *([nn.AdaptiveAvgPool2d(tuple(pool))] if pool is not None else []),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_channels, *in_hw)).numel()
        self.flat_features = flat
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, fc), nn.ReLU(inplace=True))
        self.head = nn.Linear(fc, int(outputs))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def prepare_input(self, images, name: str = "images") -> tuple[torch.Tensor, int]:
        x, size = super().prepare_input(images, name)
        want = tuple(self.net_kwargs["in_hw"])
        if tuple(x.shape[-2:]) != want:
            raise ValueError(
                f"{name}: the {self.task} net expects H x W = {want[0]} x {want[1]}, got {tuple(x.shape[-2:])}"
            )
        if x.shape[1] != self.net_kwargs["in_channels"]:
            raise ValueError(
                f"{name}: the {self.task} net expects {self.net_kwargs['in_channels']} channel(s), got {x.shape[1]}"
            )
        return x, size

    def prepare_targets(self, labels, n: int, size: int, columns: Sequence[str] | None = None) -> torch.Tensor:
        y = checked_labels(labels, n)
        if y.shape[1:] != (3,):
            raise ValueError(f"labels: expected gaze (N, 3) unit vectors, got shape {y.shape}")
        return torch.from_numpy(y)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Squared L2 per sample, batch mean."""
        return (out.float() - y).pow(2).sum(1).mean()

    def decode(self, out: torch.Tensor, size: int, method: str = "argmax") -> np.ndarray:
        """(N, 3) unit gaze vectors."""
        return F.normalize(out, dim=1, eps=1e-12).numpy()


class RegressionNet(GazeNet):
    """Task "generic": GazeNet's backbone with `outputs` = the number of label columns (grayscale or
    colour, any H x W >= 15; `in_channels`, `in_hw` and `outputs` default to the training data's).

    It is trained on targets standardized with the training set's mean and std (columns in metres
    and in degrees then weigh alike in the loss); `targets` = {"columns", "mean", "std"} is set by
    train_estimator, saved in the checkpoint's meta, and `predict` maps outputs back to label units."""

    task = "generic"
    image_ndims = (3, 4)
    image_shape = "(N, H, W) or (N, H, W, C)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.targets: dict | None = None

    @classmethod
    def data_kwargs(cls, images, labels) -> dict:
        """RegressionNet's input and output sizes as the training data has them."""
        shape, lab = np.shape(images), np.shape(labels)
        if len(shape) not in (3, 4) or len(lab) != 2:
            raise ValueError(
                f"images/labels: expected generic (N, H, W[, C]) images and (N, K) labels, got {shape} and {lab}"
            )
        return {"in_channels": shape[3] if len(shape) == 4 else 1, "in_hw": list(shape[1:3]), "outputs": lab[1]}

    @classmethod
    def read_labels(cls, ds, rows: slice | None = None, name: str | None = None) -> tuple[np.ndarray, list[str] | None]:
        """Every numeric `labels/<name>` column as one (N, K) matrix with its K names; `name` is the
        user's task name, for the error messages."""
        name = name or cls.task
        if ds.task != "generic":
            raise SimganError(
                f"{ds.path}: attr 'task': expected 'generic' for the user task {name!r} "
                f"(written by `simgan import folder`), got {ds.task!r}"
            )
        keys = [k for k in ds.keys() if k.startswith(f"{LABELS_GROUP}/")]
        if not keys:
            raise SimganError(
                f"{ds.path}: key '{LABELS_GROUP}/': expected at least one label column for task {name!r} "
                f"(import the folder with --labels TABLE), found none"
            )
        cols = ds.read(keys, rows)
        try:
            return label_matrix({k.split("/", 1)[1]: v for k, v in cols.items()})
        except ValueError as e:
            raise SimganError(f"{ds.path}: {e}") from None

    def prepare_targets(self, labels, n: int, size: int, columns: Sequence[str] | None = None) -> torch.Tensor:
        """Sets `targets` (the training set's mean and std per column) and returns the standardized labels."""
        y = checked_labels(labels, n)
        if y.ndim != 2 or y.shape[1] < 1:
            raise ValueError(f"labels: expected generic (N, K) label columns (label_matrix), got shape {y.shape}")
        y = torch.from_numpy(np.ascontiguousarray(y))
        self.targets = standardizer(labels, columns)
        if y.shape[1] != self.net_kwargs["outputs"]:
            raise ValueError(
                f"labels: expected {self.net_kwargs['outputs']} columns (net_kwargs outputs), got {y.shape[1]}"
            )
        mean, std = (torch.tensor(self.targets[k], dtype=torch.float64) for k in ("mean", "std"))
        return ((y.double() - mean) / std).float()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """MSE over the standardized columns."""
        return (out.float() - y).pow(2).mean()

    def check_ready(self) -> None:
        if self.targets is None:
            raise ValueError(
                "model: a generic estimator needs its targets (mean, std); train it or load it with load_estimator"
            )

    def decode(self, out: torch.Tensor, size: int, method: str = "argmax") -> np.ndarray:
        """(N, K) float64 in label units (targets["columns"] order)."""
        return out.double().numpy() * np.asarray(self.targets["std"]) + np.asarray(self.targets["mean"])

    def checkpoint_meta(self) -> dict:
        if self.targets is None:
            raise ValueError(
                "model: a generic estimator has no targets (mean, std) to save; train it with train_estimator"
            )
        return {"targets": self.targets}

    def restore_meta(self, path, meta: dict) -> None:
        targets, k = meta.get("targets"), self.net_kwargs["outputs"]
        ok = isinstance(targets, dict) and all(
            isinstance(targets.get(n), list) and len(targets[n]) == k for n in ("columns", "mean", "std")
        )
        if not ok:
            raise SimganError(
                f"{path}: meta 'targets': expected {{columns, mean, std}} lists of {k} (one per output), got {targets!r}"
            )
        self.targets = {n: list(targets[n]) for n in ("columns", "mean", "std")}


def label_matrix(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """A generic file's label columns ({name: (N,) or (N, k) array}, e.g. from
    Dataset.label_columns()) -> ((N, K) float64 targets, K column names), columns in sorted name
    order, an (N, k) column giving name_0 .. name_{k-1} (the names `simgan export` uses)."""
    if not columns:
        raise ValueError("labels: expected at least one numeric label column (labels/<name>), got none")
    blocks, names = [], []
    for name in sorted(columns):
        a = np.asarray(columns[name])
        if a.ndim not in (1, 2) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"labels/{name}: expected a numeric (N,) or (N, k) column, got {a.dtype} {a.shape}")
        a = a.reshape(len(a), -1).astype(np.float64)
        blocks.append(a)
        names += [name] if np.ndim(columns[name]) == 1 else [f"{name}_{i}" for i in range(a.shape[1])]
    if len({len(b) for b in blocks}) != 1:
        raise ValueError(f"labels: expected label columns of one length, got {[len(b) for b in blocks]}")
    return np.concatenate(blocks, axis=1), names


def standardizer(labels: np.ndarray, columns: Sequence[str] | None) -> dict:
    """Training-set mean and std per column; a constant column keeps std 1 (its target is 0)."""
    y = np.asarray(labels, dtype=np.float64)
    std = y.std(axis=0)
    columns = list(columns) if columns is not None else [f"label_{i}" for i in range(y.shape[1])]
    if len(columns) != y.shape[1]:
        raise ValueError(f"columns: expected {y.shape[1]} names (one per label column), got {len(columns)}")
    return {"columns": columns, "mean": y.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
