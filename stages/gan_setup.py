"""Shared by the `pretrain` and `adversarial` stages: the trainer as params.yaml describes it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from simgan.config import ParamsError
from simgan.data.format import open_dataset
from simgan.train import SimGANTrainer, TrainConfig, build_networks
from stages.common import PAPER_TASKS, Params, data_path, replicate_seed, run_checkpoint

# A user task's networks come from the gaze presets: both are small grayscale-or-colour crops with
# a local-realism discriminator, unlike the hand presets' depth maps (simgan/nets.py).
USER_TASK_PRESET_TABLE = "gaze"

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
FIELD_KINDS = {
    f.name: (list, tuple) if isinstance(f.default, tuple) else type(f.default) for f in dataclasses.fields(TrainConfig)
}
FIELD_KINDS["bf16"] = (bool, str)  # true, false or "auto", checked by TrainConfig.validate


def load_images(task: str, split: str) -> torch.Tensor:
    """All images of a split as one N x C x H x W tensor in the stored dtype (uint8 eyes stay
    uint8 in memory: 4x smaller; batches are converted to [-1, 1] when drawn). Colour images
    (N, H, W, C) have their channels moved first."""
    with open_dataset(data_path(task, split), require_labels=False) as ds:
        images = ds[ds.image_key]
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def train_config(task: str, p: Params, **overrides) -> TrainConfig:
    key = f"gan.{task}.train"
    section = p.section(key)
    unknown = sorted(set(section) - TRAIN_FIELDS)
    if unknown:
        raise ParamsError(
            f"{p.path}: key '{key}.{unknown[0]}': unknown training parameter; expected one of {sorted(TRAIN_FIELDS)}"
        )
    # Typed reads: a quoted number or "yes please" for a bool must stop here with the key named,
    # not as a TypeError deep in validation (or, for bools, silently count as true).
    for name in section:
        kind = FIELD_KINDS[name]
        section[name] = p.get(f"{key}.{name}", kind, _pair if name == "betas" else None)
    if "betas" in section:
        section["betas"] = tuple(section["betas"])
    cfg = TrainConfig(**{**section, **overrides})
    try:
        cfg.validate()
    except ValueError as e:
        raise _params_error(p, task, e) from None
    return cfg


def _pair(v) -> str | None:
    ok = len(v) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in v)
    return None if ok else "a list of two numbers"


def _params_error(p: Params, task: str, e: ValueError) -> ParamsError:
    """TrainConfig says 'train.<name>: expected ...'; name the params file and the full key."""
    msg = str(e)
    if msg.startswith("train."):
        name, _, rest = msg.partition(": ")
        return ParamsError(f"{p.path}: key 'gan.{task}.{name}': {rest}")
    return ParamsError(f"{p.path}: gan.{task}: {msg}")


def replicate_checkpoint(stage: str, task: str, p: Params, replicate: int, *inputs: Path) -> Path:
    """The running checkpoint of replicate `replicate` of GAN stage `stage` (stages.common.run_checkpoint),
    keyed by gan.<task> and the task's data files besides `inputs`."""
    data = [data_path(task, split) for split in ("synthetic", "real")]
    return run_checkpoint(stage, task, p.section(f"gan.{task}"), replicate, *data, *inputs)


def build_trainer(
    task: str, p: Params, checkpoint, progress: bool = True, replicate: int = 0, **overrides
) -> SimGANTrainer:
    """The trainer of replicate `replicate`: its GAN seed is gan.<task>.train.seed + replicate
    (stages.common.replicate_seed), which draws the networks' initial weights and every batch."""
    cfg = train_config(task, p, **overrides)
    cfg = dataclasses.replace(cfg, seed=replicate_seed(cfg.seed, replicate))
    synthetic, real = load_images(task, "synthetic"), load_images(task, "real")
    if synthetic.shape[1:] != real.shape[1:]:
        raise ParamsError(
            f"{data_path(task, 'real')}: expected images shaped like {data_path(task, 'synthetic')}'s "
            f"(C x H x W = {tuple(synthetic.shape[1:])}), got {tuple(real.shape[1:])}; import both with the same --size/--color"
        )
    if task in PAPER_TASKS:
        table, preset = task, p.get(f"gan.{task}.preset", str)
        r_over, d_over = p.section(f"gan.{task}.refiner"), p.section(f"gan.{task}.discriminator")
    else:  # a user task may leave every network key out: the gaze cpu preset is used as is
        table, preset = USER_TASK_PRESET_TABLE, p.get(f"gan.{task}.preset", str, default="cpu")
        r_over = p.get(f"gan.{task}.refiner", dict, default={})
        d_over = p.get(f"gan.{task}.discriminator", dict, default={})
    try:
        refiner, disc, r_kwargs, d_kwargs = build_networks(
            table, preset, seed=cfg.seed, refiner=r_over, discriminator=d_over, in_channels=synthetic.shape[1]
        )
    except (ValueError, TypeError) as e:
        raise ParamsError(f"{p.path}: gan.{task}: {e}") from None
    try:
        return SimGANTrainer(
            refiner, disc, synthetic, real, cfg, checkpoint_path=checkpoint, progress=progress, refiner_kwargs=r_kwargs
        )
    except ValueError as e:
        raise _params_error(p, task, e) from None
