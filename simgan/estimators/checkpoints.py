"""Estimator checkpoints: plain-dict files loaded with ``weights_only=True`` (no code runs from a
model file)."""

from __future__ import annotations

import pickle

import torch
from torch import nn

from simgan.checkpoint import save_torch
from simgan.data.format import DATA_KINDS
from simgan.device import resolve_device
from simgan.estimators.base import check_task
from simgan.estimators.networks import build_estimator
from simgan.io import SimganError

CHECKPOINT_VERSION = 1


def save_estimator(path, model: nn.Module, meta: dict | None = None) -> None:
    """Atomic torch.save of {"model": state_dict, "task", "net_kwargs", "meta", "version"}.

    `meta` must hold plain values (str/int/float/bool/None, lists, dicts) so the file loads with
    weights_only=True. What the network needs beyond its weights (a generic model's `targets`)
    goes into meta too (EstimatorNet.checkpoint_meta)."""
    task = getattr(model, "task", None)
    check_task(task)
    extra = model.checkpoint_meta()
    if extra:
        meta = {**(meta or {}), **extra}
    ckpt = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "task": task,
        "net_kwargs": dict(model.net_kwargs),
        "meta": dict(meta or {}),
        "version": CHECKPOINT_VERSION,
    }
    save_torch(ckpt, path)


def load_estimator(path, device="cpu") -> tuple[nn.Module, dict]:
    """-> (model in eval mode, meta). Only tensors and plain containers are unpickled."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SimganError(f"{path}: estimator checkpoint not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise SimganError(
            f"{path}: not a loadable estimator checkpoint (expected a weights-only dict "
            f"saved by save_estimator): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if not isinstance(ckpt, dict) or not {"model", "task", "net_kwargs"} <= set(ckpt):
        raise SimganError(f"{path}: expected a dict with keys 'model', 'task', 'net_kwargs'")
    if ckpt["task"] not in DATA_KINDS:
        raise SimganError(f"{path}: task: expected one of {DATA_KINDS}, got {ckpt['task']!r}")
    try:
        model = build_estimator(ckpt["task"], ckpt["net_kwargs"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as e:
        raise SimganError(f"{path}: weights do not match the {ckpt['task']} network: {e}") from None
    model.restore_meta(path, ckpt.get("meta") or {})
    return model.to(resolve_device(device)).eval(), dict(ckpt.get("meta") or {})
