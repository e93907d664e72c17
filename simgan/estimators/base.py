"""What every estimator network shares: its data kind, stored images -> model input, and the
per-kind steps (label preparation, loss, output decoding, checkpoint extras) that the generic
training, inference and checkpoint code call. Each network overrides what its kind needs, so
nothing outside a network branches on the kind."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from simgan.data.format import DATA_KINDS, label_keys, pixels_to_unit


def check_task(task: str) -> None:
    """An estimator's task is a data kind (simgan.data.format.DATA_KINDS)."""
    if task not in DATA_KINDS:
        raise ValueError(f"task: expected one of {DATA_KINDS}, got {task!r}")


def checked_labels(labels, n: int) -> np.ndarray:
    """Labels as float32, one finite row per image (each network then checks its own shape)."""
    y = np.asarray(labels, dtype=np.float32)
    if len(y) != n:
        raise ValueError(f"labels: expected {n} rows (one per image), got {len(y)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("labels: expected finite values, found NaN/inf")
    return y


class EstimatorNet(nn.Module):
    """Base of GazeNet, RegressionNet and HandNet: forward (training output), features (k-NN
    baselines) and the steps below, which default to what needs no work."""

    task = ""
    # The stored image arrays this network reads (simgan.data.format) and whether uint8 pixels are
    # allowed (hand depth is float only).
    image_ndims: tuple[int, ...] = (3,)
    image_shape = "(N, H, W)"
    float_images_only = False

    @classmethod
    def images_to_input(cls, images, name: str = "images") -> torch.Tensor:
        """Stored-format array -> float32 N x C x H x W tensor in [-1, 1].

        uint8 -> pixels_to_unit (x/127.5 - 1); a float array is taken as already in [-1, 1], so
        refined images kept as floats need no lossy round trip; colour (N,H,W,C) has its channels
        moved first."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim not in cls.image_ndims or images.shape[0] == 0:
            raise ValueError(
                f"{name}: expected a non-empty {cls.image_shape} array for task {cls.task!r}, got shape {images.shape}"
            )
        if images.dtype == np.uint8:
            if cls.float_images_only:
                raise ValueError(f"{name}: {cls.task} depth must be float in [-1, 1], got uint8")
            t = pixels_to_unit(images)
        elif np.issubdtype(images.dtype, np.floating):
            lo, hi = float(images.min()), float(images.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
                raise ValueError(f"{name}: expected float values in [-1, 1], got range [{lo:.4g}, {hi:.4g}]")
            t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        else:
            raise ValueError(f"{name}: expected uint8 (gaze) or float (in [-1, 1]) array, got dtype {images.dtype}")
        return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()

    @classmethod
    def data_kwargs(cls, images, labels) -> dict:
        """Network kwargs the training data decides (under the user's net kwargs)."""
        return {}

    @classmethod
    def read_labels(cls, ds, rows: slice | None = None, name: str | None = None) -> tuple[np.ndarray, list[str] | None]:
        """The labels this network learns, from an open data set: its kind's label key (columns None)."""
        key = label_keys(cls.task)[0]
        return ds.read([key], rows)[key], None

    def prepare_input(self, images, name: str = "images") -> tuple[torch.Tensor, int]:
        """Stored images -> (this network's input, the stored width), checked against the network."""
        x = self.images_to_input(images, name)
        return x, x.shape[-1]

    def training_data(self, images, labels, columns: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored images and labels -> (input, targets in training units), checked against the network."""
        x, size = self.prepare_input(images)
        return x, self.prepare_targets(labels, len(x), size, columns)

    def prepare_targets(self, labels, n: int, size: int, columns: Sequence[str] | None) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch (a mean over its rows)."""
        raise NotImplementedError

    def geometric_augment(
        self, x: torch.Tensor, y: torch.Tensor, rotation_deg: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch moved together with its labels (only hands rotate)."""
        return x, y

    def check_ready(self) -> None:
        """Raise ValueError when prediction needs state the weights do not hold."""

    def decode(self, out: torch.Tensor, size: int, method: str = "argmax") -> np.ndarray:
        """Network outputs (float, CPU) -> predictions in the stored labels' units."""
        raise NotImplementedError

    def checkpoint_meta(self) -> dict:
        """What a checkpoint must hold beyond the weights and net kwargs (plain values)."""
        return {}

    def restore_meta(self, path, meta: dict) -> None:
        """Take back checkpoint_meta's values from a loaded checkpoint's meta."""
