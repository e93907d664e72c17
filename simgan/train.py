"""Algorithm 1 of the paper: refiner pretraining on self-regularization alone, discriminator
pretraining, then K_g refiner updates per K_d discriminator updates, with a history buffer.

All three phases run as one global step counter, so a checkpoint is just (step, weights,
optimizers, buffer, RNG state) and resuming at any step replays exactly what an uninterrupted
run would have done (tested: N steps straight == N/2, stop, resume, N/2, bit for bit on CPU).

Every random draw comes from one torch.Generator seeded from `TrainConfig.seed`; the network
initialisation from `seed` as well (see `build_networks`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from simgan.checkpoint import load_checkpoint, save_model, save_torch
from simgan.config import bf16_setting
from simgan.device import autocast, memory_format, resolve_device, to_model_input
from simgan.history import HistoryBuffer
from simgan.io import SimganError
from simgan.losses import (
    REAL_LABEL,
    REFINED_LABEL,
    discriminator_loss,
    get_psi,
    patch_accuracy,
    patch_nce_loss,
    refiner_loss,
    self_regularization_loss,
)
from simgan.nets import Discriminator, PatchProjector, Refiner, discriminator_preset, refiner_preset
from simgan.optim import adam

OPTIMIZERS = ("adam", "sgd")
CHECKPOINT_VERSION = 1


class TrainingDiverged(SimganError):
    """A loss or a weight became NaN/inf; the last good checkpoint is left in place."""


@dataclass
class TrainConfig:
    steps: int = 1000  # adversarial iterations (Algorithm 1's T)
    pretrain_refiner_steps: int = 1000  # paper, gaze: 1000 (hand: 500)
    pretrain_discriminator_steps: int = 200
    batch_size: int = 32
    k_g: int = 2  # refiner updates per iteration ("update R twice for each update of D")
    k_d: int = 1
    optimizer: str = "adam"
    lr: float = 2e-4
    # The discriminator's own lr (two time-scale updates); 0 means the refiner's. 1e-3 and 2e-3 on
    # the hand GAN gave no downstream gain (docs/experiments.md), so the defaults leave it at 0.
    lr_discriminator: float = 0.0
    betas: tuple[float, float] = (0.5, 0.999)  # beta1 0.9 let D win within 100 steps (docs/paper.md, the CPU prototype)
    momentum: float = 0.0  # sgd only
    lam: float = 1.0  # self-regularization weight, per-pixel-mean L1 vs per-patch-mean CE
    psi: str = "identity"
    history_size: int = 6400  # B; 0 disables the buffer (the paper's ablation)
    # Not in the paper (issue 20's levers, docs/experiments.md). ema: the decay of an exponential
    # moving average (Polyak) of the refiner's weights over the adversarial updates, started from
    # the pretrained refiner; the average is the refiner the stage writes (0: off, the last
    # weights). r1: gamma of the R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images (Mescheder
    # et al. 2018), D's logits summed over patches (0: off).
    ema: float = 0.0
    r1: float = 0.0
    # nce: the weight of PatchNCE (CUT, Park et al. 2020) between the refiner's own feature maps of
    # the synthetic image and of its refinement, on nce_patches random locations per map, beside
    # or (lam 0) instead of the L1 self-regularization; adversarial steps only (0: off).
    nce: float = 0.0
    nce_patches: int = 256
    # Train on random crop x crop windows instead of whole images (0: whole images, the paper).
    # Both networks are convolutional and D judges local patches, so the refiner learns the same
    # local mapping and still refines whole images; a 32 px crop of a 64 px depth map costs a
    # quarter of the step.
    crop: int = 0
    seed: int = 0
    device: str = "cpu"
    bf16: bool | str = False  # True, False or "auto" (simgan.device.resolve_bf16)
    channels_last: bool = False
    checkpoint_every: int = 200
    log_every: int = 10
    sample_every: int = 0  # 0: never

    @property
    def adversarial_start(self) -> int:
        """The global step at which the adversarial phase begins (after both pretrainings)."""
        return self.pretrain_refiner_steps + self.pretrain_discriminator_steps

    @property
    def total_steps(self) -> int:
        return self.adversarial_start + self.steps

    def validate(self, n_synthetic: int | None = None, n_real: int | None = None) -> None:
        """Raise ValueError naming the parameter and the expected value."""
        checks = [
            ("steps", self.steps >= 0, ">= 0"),
            ("pretrain_refiner_steps", self.pretrain_refiner_steps >= 0, ">= 0"),
            ("pretrain_discriminator_steps", self.pretrain_discriminator_steps >= 0, ">= 0"),
            ("batch_size", self.batch_size >= 2, ">= 2 (half current, half history)"),
            ("k_g", self.k_g >= 1, ">= 1"),
            ("k_d", self.k_d >= 1, ">= 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            (
                "lr_discriminator",
                math.isfinite(self.lr_discriminator) and self.lr_discriminator >= 0,
                "a finite number >= 0 (0: the refiner's lr)",
            ),
            ("lam", math.isfinite(self.lam) and self.lam >= 0, "a finite number >= 0"),
            ("ema", 0 <= self.ema < 1, "a decay in [0, 1) (0: off)"),
            ("r1", math.isfinite(self.r1) and self.r1 >= 0, "a finite number >= 0 (0: off)"),
            ("nce", math.isfinite(self.nce) and self.nce >= 0, "a finite number >= 0 (0: off)"),
            ("nce_patches", self.nce_patches >= 1, ">= 1"),
            (
                "history_size",
                self.history_size == 0 or self.history_size >= self.batch_size,
                f"0 (disabled) or >= batch_size b={self.batch_size}",
            ),
            ("crop", self.crop >= 0, ">= 0 (0: whole images)"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("sample_every", self.sample_every >= 0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"train.{name}: expected {expected}, got {getattr(self, name)!r}")
        if bf16_setting(self.bf16):
            raise ValueError(f"train.bf16: expected {bf16_setting(self.bf16)}, got {self.bf16!r}")
        get_psi(self.psi)
        for name, n in (("synthetic", n_synthetic), ("real", n_real)):
            if n is not None and n < self.batch_size:
                raise ValueError(
                    f"train.batch_size: expected <= the number of {name} images ({n}), got {self.batch_size}"
                )


def build_networks(
    task: str,
    size: str = "cpu",
    seed: int = 0,
    refiner: dict | None = None,
    discriminator: dict | None = None,
    in_channels: int = 1,
):
    """Refiner and discriminator from a preset plus overrides, initialised from `seed` alone."""
    r_kwargs = {**refiner_preset(task, size), **(refiner or {})}
    d_kwargs = {**discriminator_preset(task, size), **(discriminator or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return (
            Refiner(in_channels=in_channels, **r_kwargs),
            Discriminator(in_channels=in_channels, **d_kwargs),
            r_kwargs,
            d_kwargs,
        )


def _make_optimizer(params, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return adam(params, lr, cfg.betas)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


@dataclass
class SimGANTrainer:
    """Holds the training state; `run()` trains to `cfg.total_steps`, resuming from
    `checkpoint_path` when it exists.

    synthetic / real: N x C x H x W tensors in memory, uint8 (stored format) or float in [-1, 1].
    on_log(row): called every `log_every` steps with a dict of losses and accuracies.
    on_sample(step, grids): called every `sample_every` steps with fixed synthetic / refined / real
    examples (for the PNG sample grids).
    on_step(): called after every step (a progress bar over several runs: stages.common).
    refiner_kwargs: the refiner's constructor arguments (build_networks), recorded by save_refiner
    so that simgan.checkpoint.load_refiner can rebuild it."""

    refiner: Refiner
    discriminator: Discriminator
    synthetic: torch.Tensor
    real: torch.Tensor
    cfg: TrainConfig
    checkpoint_path: str | Path | None = None
    on_log: Callable[[dict], None] | None = None
    on_sample: Callable[[int, dict], None] | None = None
    on_step: Callable[[], None] | None = None
    progress: bool = True
    refiner_kwargs: dict | None = None
    log: list[dict] = field(default_factory=list)

    def __post_init__(self):
        for name, t in (("synthetic", self.synthetic), ("real", self.real)):
            if t.ndim != 4:
                raise ValueError(f"{name} images: expected a N x C x H x W tensor, got shape {tuple(t.shape)}")
            if t.shape[0] == 0:
                raise ValueError(f"{name} images: expected at least one image, got an empty data set")
        if self.synthetic.shape[1:] != self.real.shape[1:]:
            raise ValueError(
                f"real images: expected the synthetic images' shape C x H x W = {tuple(self.synthetic.shape[1:])}, got {tuple(self.real.shape[1:])}"
            )
        self.cfg.validate(self.synthetic.shape[0], self.real.shape[0])
        h, w = self.synthetic.shape[2:]
        if self.cfg.crop and getattr(self.refiner, "position_octaves", 0):
            raise ValueError(
                "train.crop: expected 0 with refiner.position_octaves (the position input must see whole images, "
                f"or a crop's pixels would take another place's code), got {self.cfg.crop}"
            )
        if self.cfg.crop and not 8 <= self.cfg.crop <= min(h, w):
            raise ValueError(
                f"train.crop: expected 0 (whole images) or 8..{min(h, w)} (the images are {h} x {w}), got {self.cfg.crop}"
            )
        self.train_shape = (
            (self.synthetic.shape[1], self.cfg.crop, self.cfg.crop)
            if self.cfg.crop
            else tuple(self.synthetic.shape[1:])
        )
        self.device = resolve_device(self.cfg.device)
        mf = memory_format(self.cfg.channels_last)
        self.refiner.to(self.device, memory_format=mf)
        self.discriminator.to(self.device, memory_format=mf)
        self.opt_r = _make_optimizer(self.refiner.parameters(), self.cfg, self.cfg.lr)
        self.opt_d = _make_optimizer(
            self.discriminator.parameters(), self.cfg, self.cfg.lr_discriminator or self.cfg.lr
        )
        self.buffer = (
            HistoryBuffer(self.cfg.history_size, self.train_shape, device=self.device)
            if self.cfg.history_size
            else None
        )
        # the weight average (cfg.ema): a frozen copy, reset to the refiner when the adversarial
        # phase starts and moved towards it after every refiner update
        self.refiner_ema = None
        if self.cfg.ema:
            self.refiner_ema = copy.deepcopy(self.refiner).eval()
            _set_requires_grad(self.refiner_ema, False)
        # PatchNCE's projection head (cfg.nce), initialised from its own seed so the networks' draws
        # stay those of a run without it, and trained by its own optimizer at the refiner's lr
        self.patch_projector = self.opt_f = None
        if self.cfg.nce:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed + 3)
                self.patch_projector = PatchProjector(self.refiner.feature_channels).to(self.device)
            self.opt_f = _make_optimizer(self.patch_projector.parameters(), self.cfg, self.cfg.lr)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.step = 0
        # fixed examples for the sample grids, drawn from their own generator so that turning the
        # grids on or off never changes the training draws
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        k = min(8, self.synthetic.shape[0], self.real.shape[0])
        self._grid_idx = (
            torch.randperm(self.synthetic.shape[0], generator=g)[:k],
            torch.randperm(self.real.shape[0], generator=g)[:k],
        )

    # -- data ----------------------------------------------------------------------------------
    def _batch(self, images: torch.Tensor, n: int) -> torch.Tensor:
        idx = torch.randint(0, images.shape[0], (n,), generator=self.generator)
        batch = images[idx]
        if self.cfg.crop:  # a window per image; drawn only when cropping, so crop 0 keeps the old draws
            c, (h, w) = self.cfg.crop, images.shape[2:]
            top = torch.randint(0, h - c + 1, (n,), generator=self.generator).tolist()
            left = torch.randint(0, w - c + 1, (n,), generator=self.generator).tolist()
            batch = torch.stack([img[:, t : t + c, l : l + c] for img, t, l in zip(batch, top, left)])
        return to_model_input(batch, self.device, self.cfg.channels_last)

    def phase(self, step: int | None = None) -> str:
        s = self.step if step is None else step
        if s < self.cfg.pretrain_refiner_steps:
            return "pretrain_refiner"
        if s < self.cfg.adversarial_start:
            return "pretrain_discriminator"
        return "adversarial"

    # -- updates -------------------------------------------------------------------------------
    def _check(self, name: str, value: torch.Tensor) -> float:
        v = float(value.detach())
        if not math.isfinite(v):
            raise TrainingDiverged(
                f"training diverged at step {self.step} ({self.phase()}): {name} = {v}; {self._checkpoint_note()}"
            )
        return v

    def _refine(self, x: torch.Tensor) -> torch.Tensor:
        """The refiner on a training batch; a noise input (if it takes one) comes from the training
        generator, so a resumed run draws the same noise as an uninterrupted one."""
        return self._refine_with_mean(x)[0]

    def _refine_with_mean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_refine` and the output's noise-free part (Refiner.forward's with_mean), which the
        self-regularization reads: the refiner's output noise (refiner.output_noise) is free."""
        return self.refiner(x, self.refiner.draw_noise(x, self.generator), with_mean=True)

    def _patch_nce(self, refined: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """PatchNCE between the refiner's feature maps of `x` (keys, no gradient) and of `refined`
        (queries), at the same nce_patches locations per map (drawn from the training generator),
        averaged over the maps."""
        with torch.no_grad():
            keys = self.refiner.encode(x)
        queries = self.refiner.encode(refined)
        hw = x.shape[2] * x.shape[3]
        n = min(self.cfg.nce_patches, hw)
        where = [torch.randperm(hw, generator=self.generator)[:n].to(self.device) for _ in queries]
        q = self.patch_projector(queries, where)
        with torch.no_grad():
            k = self.patch_projector(keys, where)
        return sum(patch_nce_loss(a, b) for a, b in zip(q, k)) / len(q)

    def _refiner_pretrain_step(self) -> dict:
        x = self._batch(self.synthetic, self.cfg.batch_size)
        with autocast(self.device, self.cfg.bf16):
            reg = self_regularization_loss(self._refine_with_mean(x)[1], x, self.cfg.psi)
        self.opt_r.zero_grad(set_to_none=True)
        reg.backward()
        self.opt_r.step()
        return {"loss_refiner_reg": self._check("loss_refiner_reg", reg)}

    def _refiner_step(self) -> dict:
        x = self._batch(self.synthetic, self.cfg.batch_size)
        _set_requires_grad(self.discriminator, False)  # D frozen: no grads computed for it
        try:
            with autocast(self.device, self.cfg.bf16):
                refined, mean = self._refine_with_mean(x)
                total, adv, reg = refiner_loss(self.discriminator(refined), mean, x, self.cfg.lam, self.cfg.psi)
                nce = self._patch_nce(refined, x) if self.cfg.nce else None
                if nce is not None:
                    total = total + self.cfg.nce * nce
            self.opt_r.zero_grad(set_to_none=True)
            if self.opt_f is not None:
                self.opt_f.zero_grad(set_to_none=True)
            total.backward()
            self.opt_r.step()
            if self.opt_f is not None:
                self.opt_f.step()
            if self.refiner_ema is not None:
                with torch.no_grad():
                    for avg, p in zip(self.refiner_ema.parameters(), self.refiner.parameters()):
                        avg.lerp_(p, 1.0 - self.cfg.ema)
        finally:
            _set_requires_grad(self.discriminator, True)
        change = float((refined.detach().float() - x.float()).abs().mean())
        return {
            "loss_refiner_adv": self._check("loss_refiner_adv", adv),
            "loss_refiner_reg": self._check("loss_refiner_reg", reg),
            **({"loss_refiner_nce": self._check("loss_refiner_nce", nce)} if nce is not None else {}),
            "refined_change": change,
        }

    def _discriminator_step(self) -> dict:
        b = self.cfg.batch_size
        half = b // 2
        use_history = self.buffer is not None and len(self.buffer) > 0
        x = self._batch(self.synthetic, b - half if use_history else b)
        real = self._batch(self.real, b)
        with torch.no_grad(), autocast(self.device, self.cfg.bf16):
            current = self._refine(x).float()
        fake = current
        if use_history:
            fake = torch.cat([current, self.buffer.sample(half, self.generator).to(current.dtype)])
        fake = fake.contiguous(memory_format=memory_format(self.cfg.channels_last))
        if self.cfg.r1:
            real.requires_grad_(True)
        with autocast(self.device, self.cfg.bf16):
            logits_fake = self.discriminator(fake)
            logits_real = self.discriminator(real)
            loss = discriminator_loss(logits_fake, logits_real)
        loss_disc = self._check("loss_disc", loss)
        extra = {}
        if self.cfg.r1:
            (grad,) = torch.autograd.grad(logits_real.float().sum(), real, create_graph=True)
            penalty = grad.float().pow(2).flatten(1).sum(1).mean()
            extra["r1_penalty"] = self._check("r1_penalty", penalty)
            loss = loss + 0.5 * self.cfg.r1 * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        if self.buffer is not None:
            self.buffer.add(current[: b - half], self.generator)
        return {
            "loss_disc": loss_disc,
            "disc_acc_real": patch_accuracy(logits_real.detach(), REAL_LABEL),
            "disc_acc_refined": patch_accuracy(logits_fake.detach(), REFINED_LABEL),
            **extra,
        }

    def train_step(self) -> dict:
        phase = self.phase()
        self.refiner.train()
        self.discriminator.train()
        if phase == "pretrain_refiner":
            row = self._refiner_pretrain_step()
        elif phase == "pretrain_discriminator":
            row = self._discriminator_step()
        else:
            if self.refiner_ema is not None and self.step == self.cfg.adversarial_start:
                self.refiner_ema.load_state_dict(self.refiner.state_dict())  # the average starts here
            row = {}
            for _ in range(self.cfg.k_g):
                row.update(self._refiner_step())
            for _ in range(self.cfg.k_d):
                row.update(self._discriminator_step())
        self.step += 1
        return {"step": self.step, "phase": phase, **row}

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "config": dataclasses.asdict(self.cfg),
            "refiner": self.refiner.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_r": self.opt_r.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "generator": self.generator.get_state(),
            "log": self.log,
            # only with cfg.ema, so a checkpoint without the average is the same file as before it
            **({"refiner_ema": self.refiner_ema.state_dict()} if self.refiner_ema is not None else {}),
            **(
                {"patch_projector": self.patch_projector.state_dict(), "opt_f": self.opt_f.state_dict()}
                if self.patch_projector is not None
                else {}
            ),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise SimganError(
                f"checkpoint {self.checkpoint_path}: expected version {CHECKPOINT_VERSION}, got {state.get('version')!r}"
            )
        # Where the run continues is not a training param: a run started on a GPU may resume on a
        # CPU-only machine (and back); the saved tensors are on the CPU either way.
        free = ("steps", "checkpoint_every", "log_every", "sample_every", "device")
        saved = {k: v for k, v in state["config"].items() if k not in free}
        mine = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k in saved}
        diff = {k: (saved[k], mine[k]) for k in saved if tuple_or(saved[k]) != tuple_or(mine[k])}
        if diff:
            raise SimganError(
                f"checkpoint {self.checkpoint_path}: was written with different training params {diff} (saved, now); "
                "delete it to start over"
            )
        self.refiner.load_state_dict(state["refiner"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_r.load_state_dict(state["opt_r"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        if self.refiner_ema is not None:
            self.refiner_ema.load_state_dict(state["refiner_ema"])
        if self.patch_projector is not None:
            self.patch_projector.load_state_dict(state["patch_projector"])
            self.opt_f.load_state_dict(state["opt_f"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.log = list(state["log"])

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        for name, net in (("refiner", self.refiner), ("discriminator", self.discriminator)):
            if not _all_finite(net):
                raise TrainingDiverged(
                    f"training diverged at step {self.step}: {name} weights contain NaN/inf; {self._checkpoint_note()}"
                )
        save_torch(self.state_dict(), self.checkpoint_path)

    @property
    def output_refiner(self) -> Refiner:
        """The refiner that refines data sets: the weight average with cfg.ema, else the refiner."""
        return self.refiner_ema if self.refiner_ema is not None else self.refiner

    def save_refiner(self, path: str | Path, **meta) -> None:
        """The output refiner as a model file (simgan.checkpoint.save_model) with what load_refiner
        rebuilds it from and the step it was trained to; `meta` (e.g. task) is recorded too."""
        if self.refiner_kwargs is None:
            raise ValueError(
                "refiner_kwargs: expected the refiner's constructor arguments (SimGANTrainer(refiner_kwargs=...)) to write a loadable refiner file"
            )
        save_model(
            path,
            self.output_refiner,
            **meta,
            in_channels=self.refiner.in_channels,
            refiner_kwargs=self.refiner_kwargs,
            steps=self.step,
        )

    def _checkpoint_note(self) -> str:
        # Divergence before the first save (or after a pipeline tool deleted the old file) must not
        # send the user looking for a checkpoint that is not there.
        if self.checkpoint_path is None:
            return "no checkpoint path was configured"
        if not Path(self.checkpoint_path).exists():
            return f"no checkpoint was written yet ({self.checkpoint_path} does not exist)"
        return f"last good checkpoint kept at {self.checkpoint_path}"

    def maybe_resume(self) -> bool:
        path = Path(self.checkpoint_path) if self.checkpoint_path else None
        if path is None or not path.exists():
            return False
        self.load_state_dict(load_checkpoint(path))
        return True

    # -- the loop ------------------------------------------------------------------------------
    def sample_grids(self) -> dict:
        syn_idx, real_idx = self._grid_idx
        x = to_model_input(self.synthetic[syn_idx], self.device, self.cfg.channels_last)
        refiner = self.output_refiner.eval()
        with torch.no_grad(), autocast(self.device, self.cfg.bf16):
            # the grids' own fixed noise: drawing it from the training generator would make the
            # training draws depend on sample_every
            refined = refiner(x, refiner.draw_noise(x, torch.Generator().manual_seed(self.cfg.seed + 2))).float()
        real = to_model_input(self.real[real_idx], self.device, False)
        return {"synthetic": x.float().cpu(), "refined": refined.cpu(), "real": real.float().cpu()}

    def run(self, resume: bool = True) -> list[dict]:
        """Train to cfg.total_steps, from the checkpoint if one exists (`resume`; a caller that
        already called `maybe_resume` to read the step it resumes at passes False, so the file is
        not read twice)."""
        if resume:
            self.maybe_resume()
        total = self.cfg.total_steps
        # The log rows go into the checkpoint and the stages' tracked files, so they hold what the
        # params and seeds determine and no wall-clock time (a rerun must write the same bytes);
        # the progress bar shows the timing.
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not self.progress,
            desc="simgan",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        try:
            while self.step < total:
                row = self.train_step()
                if self.step % self.cfg.log_every == 0 or self.step == total:
                    self.log.append(row)
                    if self.on_log:
                        self.on_log(row)
                    bar.set_postfix(
                        {k: f"{v:.3f}" for k, v in row.items() if k.startswith(("loss", "disc_acc"))}, refresh=False
                    )
                if (
                    self.on_sample
                    and self.cfg.sample_every
                    and (self.step % self.cfg.sample_every == 0 or self.step == total)
                ):
                    self.on_sample(self.step, self.sample_grids())
                if self.step % self.cfg.checkpoint_every == 0 or self.step == total:
                    self.save_checkpoint()
                bar.set_description(self.phase(self.step - 1), refresh=False)
                bar.update(1)
                if self.on_step:
                    self.on_step()
        finally:
            bar.close()
        return self.log


def tuple_or(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v
