"""Checkpoint and model files: plain dicts of tensors and Python values, written atomically and
loaded with torch's weights_only unpickler, so a file can carry weights but never code.

Two kinds: the trainer's running checkpoint (simgan.train.SimGANTrainer.state_dict: step,
weights, optimizers, history buffer, RNG state, log) and a model file, {"model": state_dict,
**meta}. A refiner model file (the adversarial stage's models/<task>/refiner.pt) records the
constructor arguments it is rebuilt from (`in_channels`, `refiner_kwargs`), the `task` it was
trained for and the `steps` it was trained to."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from simgan.io import SimganError, atomic_path
from simgan.nets import Refiner

REFINER_KEYS = ("model", "refiner_kwargs", "in_channels")


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without executing code: weights_only refuses arbitrary pickles."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a malicious or corrupt file: say which, never run it
        raise SimganError(
            f"{path}: not a loadable simgan checkpoint (weights_only load refused or failed: {type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e


def save_torch(obj, path: str | Path) -> None:
    """torch.save, atomically and byte-reproducibly: through a file object, because torch names the
    records inside the zip after the file it is given, and atomic_path's temp name is random (the
    same weights made a new file, and a new DVC hash, on every run)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save_model(path: str | Path, module: nn.Module, **meta) -> None:
    """A model file as a plain dict: {"model": state_dict, **meta}, written atomically."""
    save_torch({"model": {k: v.detach().cpu() for k, v in module.state_dict().items()}, **meta}, path)


def load_refiner_state(path: str | Path, task: str | None = None) -> dict:
    """A refiner model file's dict, checked: the keys load_refiner needs, and with `task` given,
    that the file was trained for that task (a hand refiner copied to models/gaze/ must not
    refine eye images)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise SimganError(
            f"{path}: expected a refiner model file written by simgan (a dict), got {type(state).__name__}"
        )
    for key in REFINER_KEYS:
        if key not in state:
            raise SimganError(f"{path}: key '{key}': expected a refiner model file written by simgan, key missing")
    if task is not None and state.get("task") != task:
        found = f"got {state['task']!r} (a refiner trained for another task)" if "task" in state else "key missing"
        raise SimganError(f"{path}: key 'task': expected {task!r}, {found}")
    return state


def load_refiner(path: str | Path, task: str | None = None) -> tuple[Refiner, dict]:
    """The refiner of a model file in eval mode, and the file's dict (load_refiner_state)."""
    state = load_refiner_state(path, task)
    refiner = Refiner(in_channels=state["in_channels"], **state["refiner_kwargs"])
    refiner.load_state_dict(state["model"])
    refiner.eval()
    return refiner, state
