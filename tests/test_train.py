import math
import pickle

import pytest
import torch

from simgan.checkpoint import load_checkpoint, load_refiner
from simgan.io import SimganError
from simgan.nets import Discriminator, Refiner
from simgan.train import SimGANTrainer, TrainConfig, TrainingDiverged, build_networks

SMALL_D = (("conv", 8, 3, 2), ("conv", 8, 1, 1))


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 12, 16), dtype=torch.uint8, generator=g), torch.rand(
        n, 1, 12, 16, generator=g
    ) * 2 - 1


def _trainer(tmp_path, steps, noise_channels=0, refiner_kw=None, disc_kw=None, **overrides):
    torch.manual_seed(0)
    syn, real = _data()
    cfg = TrainConfig(
        **{
            **dict(
                steps=steps,
                pretrain_refiner_steps=3,
                pretrain_discriminator_steps=2,
                batch_size=8,
                history_size=16,
                checkpoint_every=2,
                log_every=1,
                seed=3,
            ),
            **overrides,
        }
    )
    return SimGANTrainer(
        Refiner(channels=4, blocks=1, noise_channels=noise_channels, **(refiner_kw or {})),
        Discriminator(layers=SMALL_D, **(disc_kw or {})),
        syn,
        real,
        cfg,
        checkpoint_path=tmp_path / "ckpt.pt",
        progress=False,
    )


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# issue 20's levers, all at once: the weight average, R1, PatchNCE, noise inside the blocks and at
# the output, a high-pass, spectrally normalized, two-scale discriminator
LEVERS = dict(
    ema=0.9,
    r1=1.0,
    nce=1.0,
    nce_patches=32,
    refiner_kw=dict(block_noise=True, output_noise=True),
    disc_kw=dict(highpass=True, spectral_norm=True, scales=2),
)


@pytest.mark.parametrize(
    "settings",
    [{}, dict(noise_channels=1), LEVERS],
    ids=["deterministic", "noise-input", "ema-r1-nce-blocknoise-outputnoise-highpass-sn-scales"],
)
def test_resume_gives_bitwise_identical_weights(tmp_path, settings):
    straight = _trainer(tmp_path / "a", steps=8, **settings)
    straight.run()
    half = _trainer(tmp_path / "b", steps=4, **settings)  # stops at step 3 + 2 + 4 = 9 of 13
    half.run()
    resumed = _trainer(tmp_path / "b", steps=8, **settings)
    assert resumed.maybe_resume() and resumed.step == 9
    resumed.run()
    pairs = [(straight.refiner, resumed.refiner), (straight.discriminator, resumed.discriminator)]
    pairs += [(straight.refiner_ema, resumed.refiner_ema)] if "ema" in settings else []
    pairs += [(straight.patch_projector, resumed.patch_projector)] if "nce" in settings else []
    for a, b in pairs:
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(straight.buffer) == len(resumed.buffer)
    assert torch.equal(straight.buffer.images, resumed.buffer.images)
    assert [r["step"] for r in straight.log] == [r["step"] for r in resumed.log]


def test_phases_follow_algorithm_1(tmp_path):
    t = _trainer(tmp_path, steps=2)
    rows = t.run()
    phases = [r["phase"] for r in rows]
    assert phases == ["pretrain_refiner"] * 3 + ["pretrain_discriminator"] * 2 + ["adversarial"] * 2
    assert "loss_refiner_adv" in rows[-1] and "loss_disc" in rows[-1]
    assert "loss_refiner_adv" not in rows[0]


def test_history_buffer_fills_during_training(tmp_path):
    t = _trainer(tmp_path, steps=4, history_size=16)
    t.run()
    # D steps: 2 pretrain + 4 adversarial; the first adds b=8, later ones b/2=4 current images
    assert len(t.buffer) == 16 and t.buffer.full


def test_nan_loss_stops_with_last_good_checkpoint_kept(tmp_path):
    t = _trainer(tmp_path, steps=6, checkpoint_every=1)
    t.cfg.steps = 6
    for _ in range(4):
        t.train_step()
        t.save_checkpoint()
    good = load_checkpoint(tmp_path / "ckpt.pt")
    with torch.no_grad():
        t.refiner.head.weight.fill_(float("nan"))
    with pytest.raises(
        TrainingDiverged, match=r"step 4 \(pretrain_discriminator\): loss_disc = nan.*last good checkpoint kept"
    ):
        t.train_step()
    assert load_checkpoint(tmp_path / "ckpt.pt")["step"] == good["step"] == 4


def test_nan_weights_are_never_checkpointed(tmp_path):
    t = _trainer(tmp_path, steps=1)
    with torch.no_grad():
        t.discriminator.head.bias.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="discriminator weights"):
        t.save_checkpoint()
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lr=-1e-3), "train.lr: expected a finite number > 0"),
        (dict(batch_size=128, history_size=0), r"train.batch_size: expected <= the number of synthetic images \(64\)"),
        (dict(history_size=4), r"train.history_size: expected 0 \(disabled\) or >= batch_size"),
        (dict(optimizer="rmsprop"), "train.optimizer"),
        (dict(psi="vgg"), "psi"),
        (dict(ema=1.0), r"train.ema: expected a decay in \[0, 1\) \(0: off\), got 1.0"),
        (dict(r1=-1.0), r"train.r1: expected a finite number >= 0 \(0: off\), got -1.0"),
        (dict(nce=float("nan")), r"train.nce: expected a finite number >= 0 \(0: off\), got nan"),
        (dict(nce=1.0, nce_patches=0), r"train.nce_patches: expected >= 1, got 0"),
    ],
)
def test_bad_params_name_the_key_and_the_expectation(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, steps=1, **overrides)


def test_wrong_shapes_and_empty_sets_are_refused(tmp_path):
    cfg = TrainConfig(batch_size=2)
    r, d = Refiner(channels=4, blocks=1), Discriminator(layers=SMALL_D)
    with pytest.raises(ValueError, match="N x C x H x W"):
        SimGANTrainer(r, d, torch.zeros(4, 12, 16), torch.zeros(4, 1, 12, 16), cfg)
    with pytest.raises(ValueError, match="empty"):
        SimGANTrainer(r, d, torch.zeros(0, 1, 12, 16), torch.zeros(4, 1, 12, 16), cfg)
    with pytest.raises(ValueError, match=r"shape C x H x W = \(1, 12, 16\)"):
        SimGANTrainer(r, d, torch.zeros(4, 1, 12, 16), torch.zeros(4, 1, 16, 12), cfg)


def test_the_trainer_writes_a_refiner_file_load_refiner_rebuilds(tmp_path):
    """refiner_kwargs is the trainer's own (a constructor argument), not an attribute a stage
    attaches after construction; without it no loadable refiner file can be written."""
    kwargs = dict(channels=4, blocks=1, noise_channels=1)
    torch.manual_seed(0)
    syn, real = _data()
    cfg = TrainConfig(steps=1, pretrain_refiner_steps=1, pretrain_discriminator_steps=1, batch_size=8, history_size=16)
    t = SimGANTrainer(
        Refiner(**kwargs), Discriminator(layers=SMALL_D), syn, real, cfg, progress=False, refiner_kwargs=kwargs
    )
    t.run()
    t.save_refiner(tmp_path / "refiner.pt", task="gaze")
    refiner, state = load_refiner(tmp_path / "refiner.pt", "gaze")
    assert (state["task"], state["steps"], state["in_channels"], state["refiner_kwargs"]) == ("gaze", 3, 1, kwargs)
    assert refiner.noise_channels == 1 and not refiner.training
    assert all(torch.equal(v, t.refiner.state_dict()[k].cpu()) for k, v in refiner.state_dict().items())
    with pytest.raises(SimganError, match=r"refiner.pt: key 'task': expected 'hand', got 'gaze'"):
        load_refiner(tmp_path / "refiner.pt", "hand")
    with pytest.raises(ValueError, match="refiner_kwargs"):
        _trainer(tmp_path, steps=1).save_refiner(tmp_path / "other.pt", task="gaze")
    assert not (tmp_path / "other.pt").exists()


def test_resume_refuses_a_checkpoint_from_other_params(tmp_path):
    _trainer(tmp_path, steps=1).run()
    other = _trainer(tmp_path, steps=1, lam=5.0)
    with pytest.raises(SimganError, match="lam"):
        other.maybe_resume()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(SimganError, match="weights_only"):
        load_checkpoint(path)


def test_build_networks_is_deterministic_under_seed():
    a, _, _, _ = build_networks("gaze", "cpu", seed=7)
    b, _, _, _ = build_networks("gaze", "cpu", seed=7)
    c, _, _, _ = build_networks("gaze", "cpu", seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_a_checkpoint_from_another_device_resumes_here(tmp_path):
    # A run started on a GPU machine continues on a CPU-only one: the device is where the run goes
    # on, not a training param (tests/test_cuda.py does this for real where there is a GPU).
    first = _trainer(tmp_path, steps=2)
    first.run()
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    state["config"]["device"] = "cuda"
    torch.save(state, tmp_path / "ckpt.pt")
    resumed = _trainer(tmp_path, steps=4)
    assert resumed.maybe_resume() and resumed.step == 7
    resumed.run()
    assert resumed.step == 9
    # a real training param still refuses
    state["config"]["lam"] = 0.5
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(SimganError, match="different training params.*'lam'"):
        _trainer(tmp_path, steps=4).maybe_resume()


def test_the_discriminator_takes_its_own_lr_when_given(tmp_path):
    same = _trainer(tmp_path / "a", steps=1, lr=3e-4)
    assert [g["lr"] for g in same.opt_d.param_groups] == [3e-4] == [g["lr"] for g in same.opt_r.param_groups]
    own = _trainer(tmp_path / "b", steps=1, lr=3e-4, lr_discriminator=1e-3)
    assert [g["lr"] for g in own.opt_d.param_groups] == [1e-3] and [g["lr"] for g in own.opt_r.param_groups] == [3e-4]
    with pytest.raises(ValueError, match="train.lr_discriminator: expected a finite number >= 0"):
        _trainer(tmp_path / "c", steps=1, lr_discriminator=-1.0)


def test_crop_trains_on_windows_of_the_images_and_the_refiner_still_takes_whole_images(tmp_path):
    t = _trainer(tmp_path, steps=3, crop=8, history_size=16)
    seen = []
    t.refiner.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[2:])))
    t.run()
    assert set(seen) == {(8, 8)}  # every training forward saw a window, not the 12 x 16 image
    assert t.buffer.images.shape[1:] == (1, 8, 8)
    syn, _ = _data()
    # each window is a real window of some image: its pixels occur at that position in the set
    t.generator.manual_seed(5)
    batch = t._batch(syn, 4)
    full = syn.float() / 127.5 - 1.0
    for w in batch:
        hits = [
            (n, i, j)
            for n in range(len(syn))
            for i in range(12 - 8 + 1)
            for j in range(16 - 8 + 1)
            if torch.equal(full[n, :, i : i + 8, j : j + 8], w.float())
        ]
        assert hits
    t.refiner.eval()
    with torch.no_grad():
        assert t.refiner(full[:2]).shape == (2, 1, 12, 16)
    # crop 0 keeps the whole-image draws; a window larger than the image is refused, naming the key
    assert _trainer(tmp_path / "b", steps=1).train_shape == (1, 12, 16)
    with pytest.raises(
        ValueError, match=r"train.crop: expected 0 \(whole images\) or 8..12 \(the images are 12 x 16\), got 13"
    ):
        _trainer(tmp_path / "c", steps=1, crop=13)


def test_a_noise_refiner_trains_on_fresh_noise_and_its_sample_grids_do_not_move_the_training_draws(tmp_path):
    with_grids = _trainer(tmp_path / "a", steps=4, noise_channels=1, sample_every=1)
    with_grids.on_sample = lambda step, grids: None
    with_grids.run()
    without = _trainer(tmp_path / "b", steps=4, noise_channels=1)
    without.run()
    wa, wb = _weights(with_grids.refiner), _weights(without.refiner)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the noise reaches the refiner: the same image refines differently under two draws
    x = torch.rand(2, 1, 12, 16) * 1.6 - 0.8
    r = without.refiner.eval()
    with torch.no_grad():
        a = r(x, r.draw_noise(x, torch.Generator().manual_seed(0)))
        b = r(x, r.draw_noise(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, b)


def test_the_ema_refiner_starts_at_the_pretrained_weights_follows_each_update_and_is_what_is_written(tmp_path):
    t = _trainer(tmp_path, steps=1, ema=0.75, k_g=1, refiner_kw=dict(residual=True))
    while t.phase() != "adversarial":
        t.train_step()
    before = _weights(t.refiner)
    t.train_step()  # the adversarial phase's first step: the average restarts here, then one update
    after = _weights(t.refiner)
    avg = _weights(t.output_refiner)
    assert t.output_refiner is t.refiner_ema
    for k in before:
        assert torch.allclose(avg[k], 0.75 * before[k] + 0.25 * after[k], atol=1e-7)
        assert not torch.equal(avg[k], after[k]) or torch.equal(before[k], after[k])
    assert not any(p.requires_grad for p in t.refiner_ema.parameters())
    t.refiner_kwargs = dict(channels=4, blocks=1, residual=True)
    t.save_refiner(tmp_path / "refiner.pt", task="gaze")
    written, _ = load_refiner(tmp_path / "refiner.pt", "gaze")
    assert all(torch.equal(v, avg[k]) for k, v in written.state_dict().items())
    assert _trainer(tmp_path / "plain", steps=1).output_refiner.__class__ is Refiner


def test_r1_penalises_the_real_images_gradient_but_not_the_logged_classification_loss(tmp_path):
    plain = _trainer(tmp_path / "a", steps=3)
    r1 = _trainer(tmp_path / "b", steps=3, r1=10.0)
    rows_plain = [plain.train_step() for _ in range(plain.cfg.total_steps)]
    rows_r1 = [r1.train_step() for _ in range(r1.cfg.total_steps)]
    first_d = plain.cfg.pretrain_refiner_steps  # the first discriminator update: same weights and batches so far
    assert rows_r1[first_d]["loss_disc"] == rows_plain[first_d]["loss_disc"]
    assert rows_r1[first_d]["r1_penalty"] > 0 and "r1_penalty" not in rows_plain[first_d]
    wa, wb = _weights(plain.discriminator), _weights(r1.discriminator)
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)  # the penalty changed D's updates


def test_patch_nce_joins_the_refiner_loss_in_the_adversarial_phase_only_and_trains_its_projection_head(tmp_path):
    plain = _trainer(tmp_path / "a", steps=2, refiner_kw=dict(residual=True))
    nce = _trainer(tmp_path / "b", steps=2, nce=2.0, nce_patches=50, refiner_kw=dict(residual=True))
    assert plain.patch_projector is None and "patch_projector" not in plain.state_dict()
    head = _weights(nce.patch_projector)
    rows_plain = [plain.train_step() for _ in range(plain.cfg.total_steps)]
    rows_nce = [nce.train_step() for _ in range(nce.cfg.total_steps)]
    first_adv = plain.cfg.adversarial_start
    # pretraining is untouched: the same losses, the same draws
    assert rows_nce[:first_adv] == rows_plain[:first_adv]
    assert all("loss_refiner_nce" not in r for r in rows_nce[:first_adv] + rows_plain)
    first = rows_nce[first_adv]
    assert 0 < first["loss_refiner_nce"] < 2 * math.log(50)  # a cross-entropy over 50 candidates
    wa, wb = _weights(plain.refiner), _weights(nce.refiner)
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)  # the term moved the refiner's updates
    moved = _weights(nce.patch_projector)
    assert not any(torch.equal(head[k], moved[k]) for k in head)  # and its head learned
    state = nce.state_dict()
    assert set(state["patch_projector"]) == set(head) and state["opt_f"]["state"]


def test_crop_training_is_refused_for_a_refiner_with_position_input(tmp_path):
    with pytest.raises(ValueError, match=r"train.crop: expected 0 with refiner.position_octaves"):
        _trainer(tmp_path, steps=1, crop=8, refiner_kw=dict(position_octaves=2))
    _trainer(tmp_path, steps=1, refiner_kw=dict(position_octaves=2)).run()  # whole images train
