"""Estimator training: the settings (EstimatorConfig, params.yaml `estimator.<task>`) and the one
loop that trains in one process or data-parallel in a torch.distributed process group.

The training set is held in memory as tensors; bf16 autocast + channels_last roughly halve CPU
step time where bf16 is fast (simgan.device.resolve_bf16). Everything random comes from `seed`:
the initial weights, the batches and their augmentation, so a run is reproducible.

Data-parallel (torchrun, simgan.distributed): inside a process group every rank holds the whole
training set and the same generator, draws the whole batch and its augmentation (so the random
streams are the one-process run's), keeps its rows batch_slice(B, rank, world) and weights its
loss so that DDP's gradient average is the gradient of the whole batch's mean. BatchNorm
statistics (hand net) stay per rank, as DDP does by default."""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from simgan.config import Params, ParamsError, bf16_setting, device_param
from simgan.device import autocast, memory_format, resolve_device
from simgan.estimators.base import EstimatorNet, check_task
from simgan.estimators.networks import NETS, init_estimator
from simgan.optim import adam

LR_SCHEDULES = ("constant", "cosine")
HEADS = ("regression",)  # a user task's estimator: RegressionNet over every label column


def _count(v, lo: int = 1) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class EstimatorConfig:
    """How an estimator is trained: params.yaml `estimator.<task>` (from_params), one definition
    for the estimator stage, the torchrun entry point and library callers (train_estimator)."""

    steps: int
    batch_size: int  # the whole batch; under DDP it is split over the processes
    lr: float
    lr_schedule: str = "constant"  # "cosine": annealed from lr to 0 over the steps (no warmup)
    net: dict = field(default_factory=dict)  # network kwargs (GazeNet, HandNet, RegressionNet)
    # hands only: every batch rotated by U(-rotation_deg, rotation_deg) with its joints (the paper
    # trains its hourglass with +-20 degree rotations)
    rotation_deg: float = 20.0
    bf16: bool | str = False  # True, False or "auto" (simgan.device.resolve_bf16)
    channels_last: bool = False
    device: str = "cpu"  # a torch.device too, for library callers
    log_every: int = 100  # a history row every log_every steps (0: the last step only)
    # Read by the estimator stage, not by the loop:
    base_n: int | None = None  # "1x": the first base_n rows of the source; kx trains on k * base_n
    augment: dict = field(default_factory=dict)  # photometric strengths over simgan.augment's defaults
    head: str = "regression"  # user tasks: the kind of estimator (HEADS)

    def validate(self) -> None:
        """Raise ValueError naming the parameter (estimator.<name>) and the expected value."""
        checks = [
            ("steps", _count(self.steps), "a positive integer"),
            ("batch_size", _count(self.batch_size), "a positive integer"),
            ("lr", _number(self.lr) and self.lr > 0, "a finite number > 0"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {list(LR_SCHEDULES)}"),
            ("net", isinstance(self.net, dict), "a mapping of network arguments"),
            ("rotation_deg", _number(self.rotation_deg) and self.rotation_deg >= 0, "a finite number >= 0 (degrees)"),
            ("bf16", bf16_setting(self.bf16) is None, bf16_setting(self.bf16)),
            ("channels_last", isinstance(self.channels_last, bool), "true or false"),
            (
                "device",
                isinstance(self.device, (str, torch.device)),
                "a device name ('cpu', 'cuda', 'cuda:N' or 'auto')",
            ),
            ("log_every", _count(self.log_every, 0), "an integer >= 0 (0: the last step only)"),
            ("base_n", self.base_n is None or _count(self.base_n), "a positive integer"),
            ("augment", isinstance(self.augment, dict), "a mapping of augmentation strengths"),
            ("head", self.head in HEADS, f"one of {list(HEADS)}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"estimator.{name}: expected {expected}, got {getattr(self, name)!r}")

    @classmethod
    def from_params(cls, p: Params, task: str) -> EstimatorConfig:
        """params.yaml `estimator.<task>`, typed and validated: unset keys take the defaults above,
        `device` is resolved on this machine (simgan.config.device_param); an unknown key, a missing
        steps / batch_size / lr or a bad value is one ParamsError naming the file and the full key."""
        key = f"estimator.{task}"
        section = p.get(key, dict)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(section) - set(fields))
        if unknown:
            raise ParamsError(
                f"{p.path}: key '{key}.{unknown[0]}': unknown estimator parameter; expected one of {sorted(fields)}"
            )
        hints = typing.get_type_hints(cls)
        required = {
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        # Typed reads: a quoted number or "yes" for a bool stops here with the key named.
        values = {
            name: copy.deepcopy(p.get(f"{key}.{name}", _param_kind(hints[name])))
            for name in fields
            if name in section or name in required
        }
        values["device"] = device_param(p, f"{key}.device")  # 'auto' resolved, a missing GPU named here
        cfg = cls(**values)
        try:
            cfg.validate()
        except ValueError as e:
            name, _, rest = str(e).partition(": ")
            raise ParamsError(f"{p.path}: key '{key}.{name.removeprefix('estimator.')}': {rest}") from None
        return cfg


def _param_kind(hint) -> type | tuple[type, ...]:
    """A field's annotation -> the `kind` of Params.get (None allowed only as a default)."""
    if isinstance(hint, types.UnionType):
        kinds = tuple(k for k in typing.get_args(hint) if k is not type(None))
        return kinds[0] if len(kinds) == 1 else kinds
    return typing.get_origin(hint) or hint


def make_optimizer(params, lr: float, steps: int, lr_schedule: str = "constant"):
    """Adam and its per-step lr schedule (None for "constant"). "cosine" anneals from lr to 0 over
    `steps` (no warmup)."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {LR_SCHEDULES}, got {lr_schedule!r}")
    opt = adam(params, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if lr_schedule == "cosine" else None
    return opt, sched


def prepare_training(
    task: str,
    images: np.ndarray,
    labels: np.ndarray,
    net_kwargs: dict | None,
    seed: int,
    columns: Sequence[str] | None = None,
) -> tuple[EstimatorNet, torch.Tensor, torch.Tensor]:
    """A fresh model initialised from `seed` alone and the whole training set as tensors in the
    model's training units (EstimatorNet.training_data), checked against each other."""
    check_task(task)
    net_kwargs = {**NETS[task].data_kwargs(images, labels), **(net_kwargs or {})}
    model = init_estimator(task, net_kwargs, int(seed))
    x_all, y_all = model.training_data(images, labels, columns)
    return model, x_all, y_all


def draw_batch(
    model: EstimatorNet,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    rotation_deg: float,
    augment,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: rows drawn with replacement, moved with their labels (hands rotate), then
    the photometric augmentation, every draw from `generator`."""
    n = len(x_all)
    idx = torch.randint(n, (min(batch_size, n),), generator=generator).to(x_all.device)
    xb, yb = model.geometric_augment(x_all[idx], y_all[idx], rotation_deg, generator)
    if augment is not None:
        xb = augment(xb, generator)
    return xb, yb


def batch_slice(batch: int, rank: int, size: int) -> slice:
    """This rank's rows of a batch of `batch` rows: contiguous and as even as possible."""
    return slice(rank * batch // size, (rank + 1) * batch // size)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group this process is in; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class LossLog:
    """Training history: {"step", "loss"} every `log_every` steps (0: never) and at the
    last step, the loss averaged over the steps since the previous row."""

    def __init__(self, steps: int, log_every: int):
        self.steps, self.log_every = steps, log_every
        self.rows: list[dict] = []
        self._sum, self._n = 0.0, 0

    def add(self, step: int, loss: float) -> None:
        self._sum += loss
        self._n += 1
        if (self.log_every and (step + 1) % self.log_every == 0) or step == self.steps - 1:
            self.rows.append({"step": step + 1, "loss": self._sum / self._n})
            self._sum, self._n = 0.0, 0


def train_estimator(
    task: str,
    images: np.ndarray,
    labels: np.ndarray,
    config: EstimatorConfig | None = None,
    *,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    columns: Sequence[str] | None = None,
    progress: bool = False,
    on_step: Callable[[], object] | None = None,
    **settings,
) -> tuple[EstimatorNet, list[dict]]:
    """Train a fresh estimator with Adam; returns (model in eval mode on the config's device, history).

    `config` (or EstimatorConfig(**settings)) holds the settings; `settings` override its fields by
    name (`net_kwargs` is the network's name for `net`). images/labels are in the stored format
    (gaze: (N,35,55) uint8 + (N,3) gaze; hand: (N,S,S) depth + (N,14,3) joints; generic:
    (N,H,W) or (N,H,W,C) uint8 + (N,K) targets from label_matrix, whose names `columns` are kept
    in the model's `targets`). `augment` (e.g. simgan.augment.photometric_augment) runs on each
    batch of model-input tensors. Same seed -> identical weights on CPU. history holds
    {"step", "loss"} (LossLog; no wall-clock values: history.json is a tracked output); under DDP the losses are whole-batch means on every
    rank and the returned network (unwrapped) is the same on every rank. `on_step()` is called
    after every training step on rank 0 (progress reporting, e.g. simgan.parallel.StepCounter.add:
    it sees no tensor and must draw no random number, so the weights are the same without it)."""
    check_task(task)
    if "net_kwargs" in settings:
        settings["net"] = settings.pop("net_kwargs") or {}
    cfg = dataclasses.replace(config, **settings) if config is not None else EstimatorConfig(**settings)
    cfg.validate()
    rank, world = process_group()
    if cfg.batch_size < world:
        raise ValueError(f"estimator.batch_size: expected an integer >= the {world} processes, got {cfg.batch_size!r}")
    dev = resolve_device(cfg.device)
    model, x_all, y_all = prepare_training(task, images, labels, cfg.net, seed, columns)
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    mf = memory_format(cfg.channels_last)
    model = model.to(dev, memory_format=mf).train()
    net = (
        model
        if world == 1
        else nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    )
    opt, sched = make_optimizer(net.parameters(), cfg.lr, cfg.steps, cfg.lr_schedule)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    log = LossLog(cfg.steps, cfg.log_every)
    it = range(cfg.steps)
    if progress and rank == 0:
        from tqdm import tqdm

        it = tqdm(it, desc=f"train {task}", leave=False)
    for step in it:
        # Every rank draws the whole batch and its augmentation, so the random streams stay those
        # of the one-process run, and keeps its slice (all of it in one process).
        xb, yb = draw_batch(model, x_all, y_all, cfg.batch_size, gen, cfg.rotation_deg, augment)
        b = len(xb)
        part = batch_slice(b, rank, world)
        xb, yb = xb[part].contiguous(memory_format=mf), yb[part]
        with autocast(dev, cfg.bf16):
            out = net(xb)
        # Each loss is a mean over its rows; weighting by the slice's share of the batch times the
        # world size makes DDP's average of gradients the gradient of the whole batch's mean (the
        # weight is exactly 1 in one process).
        loss = model.loss(out, yb) * (len(xb) * world / b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        whole = loss.detach().float() / world
        if world > 1:
            dist.all_reduce(whole)
        log.add(step, float(whole))
        if on_step is not None and rank == 0:
            on_step()
    return model.eval(), log.rows
