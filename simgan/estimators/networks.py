"""The estimator network of each data kind, and the kind-level entry points that dispatch to it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from simgan.estimators.base import EstimatorNet, check_task
from simgan.estimators.gaze import GazeNet, RegressionNet
from simgan.estimators.hand import HandNet

NETS: dict[str, type[EstimatorNet]] = {"gaze": GazeNet, "hand": HandNet, "generic": RegressionNet}


def build_estimator(task: str, net_kwargs: dict | None = None) -> EstimatorNet:
    check_task(task)
    try:
        return NETS[task](**(net_kwargs or {}))
    except TypeError as e:
        raise ValueError(f"net_kwargs: not valid for the {task} network: {e}") from None


def init_estimator(task: str, net_kwargs: dict | None, seed: int) -> EstimatorNet:
    """A fresh network whose initial weights are a function of `seed` alone."""
    # Weight init uses torch's global RNG; forking it keeps the caller's stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_estimator(task, net_kwargs)


def check_model(model: nn.Module, task: str) -> None:
    check_task(task)
    if not isinstance(model, NETS[task]) or model.task != task:
        raise ValueError(f"model: expected a {NETS[task].__name__} for task {task!r}, got {type(model).__name__}")


def images_to_input(images: np.ndarray, task: str, name: str = "images") -> torch.Tensor:
    """Stored-format array -> float32 N x C x H x W tensor in [-1, 1], as the networks of `task`
    read it (EstimatorNet.images_to_input). Gaze: (N,H,W) uint8 -> x/127.5 - 1, or float already in
    [-1, 1]. Hand: (N,S,S) float depth in [-1, 1]. Generic: like gaze, colour (N,H,W,C) too."""
    check_task(task)
    return NETS[task].images_to_input(images, name)


def read_training_labels(
    ds, task: str, rows: slice | None = None, name: str | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """The labels an estimator of `task` learns, from an open data set (simgan.data.format): gaze
    vectors or joints (columns None), or for "generic" every numeric `labels/<name>` column as one
    (N, K) matrix with its K names. `name` is the user's task name, for the error messages."""
    check_task(task)
    return NETS[task].read_labels(ds, rows, name)
