"""Shared by the `pretrain` and `adversarial` stages: the trainer as params.yaml describes it."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from simgan.config import ParamsError
from simgan.data.format import open_dataset
from simgan.train import SimGANTrainer, TrainConfig, build_networks
from stages.common import Params, data_path

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def load_images(task: str, split: str) -> torch.Tensor:
    """All images of a split as one N x 1 x H x W tensor in the stored dtype (uint8 eyes stay
    uint8 in memory: 4x smaller; batches are converted to [-1, 1] when drawn)."""
    with open_dataset(data_path(task, split), require_labels=False) as ds:
        images = ds[ds.image_key]
    return torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)


def train_config(task: str, p: Params, **overrides) -> TrainConfig:
    key = f"gan.{task}.train"
    section = p.section(key)
    unknown = sorted(set(section) - TRAIN_FIELDS)
    if unknown:
        raise ParamsError(f"{p.path}: key '{key}.{unknown[0]}': unknown training parameter; expected one of {sorted(TRAIN_FIELDS)}")
    if "betas" in section:
        section["betas"] = tuple(section["betas"])
    cfg = TrainConfig(**{**section, **overrides})
    try:
        cfg.validate()
    except ValueError as e:
        raise ParamsError(f"{p.path}: {str(e).replace('train.', key + '.', 1)}") from None
    return cfg


def build_trainer(task: str, p: Params, checkpoint, progress: bool = True, **overrides) -> SimGANTrainer:
    cfg = train_config(task, p, **overrides)
    refiner, disc, r_kwargs, d_kwargs = build_networks(
        task,
        p.get(f"gan.{task}.preset", str),
        seed=cfg.seed,
        refiner=p.section(f"gan.{task}.refiner"),
        discriminator=p.section(f"gan.{task}.discriminator"),
    )
    synthetic, real = load_images(task, "synthetic"), load_images(task, "real")
    try:
        trainer = SimGANTrainer(refiner, disc, synthetic, real, cfg, checkpoint_path=checkpoint, progress=progress)
    except ValueError as e:
        raise ParamsError(f"{p.path}: gan.{task}: {e}") from None
    trainer.refiner_kwargs = r_kwargs
    return trainer
