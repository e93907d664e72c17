import math
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simgan.augment import photometric_augment
from simgan.config import Params, ParamsError
from simgan.estimators import (
    EstimatorConfig,
    GazeNet,
    HandNet,
    features,
    gaussian_heatmaps,
    heatmap_to_uv,
    load_estimator,
    make_optimizer,
    predict,
    rotate_batch,
    save_estimator,
    train_estimator,
)
from simgan.io import SimganError
from simgan.metrics import angular_error_deg, constant_prediction, pck_at

TINY_GAZE = dict(width=0.25, fc=64)
TINY_HAND = dict(stacks=2, channels=8, joints=3, in_size=32, heatmap_size=16, depth=2)


def gaze_from_angles(pitch, yaw):
    # MPIIGaze convention: pitch = asin(-y), yaw = atan2(-x, -z)
    return np.stack([-np.cos(pitch) * np.sin(yaw), -np.sin(pitch), -np.cos(pitch) * np.cos(yaw)], 1).astype(np.float32)


def dot_gaze_data(n, seed):
    """A dark pupil-like blob whose position encodes (yaw, pitch): trivially learnable."""
    rng = np.random.default_rng(seed)
    pitch, yaw = rng.uniform(-0.4, 0.4, n), rng.uniform(-0.4, 0.4, n)
    cx, cy = 27 + yaw * 40, 17 + pitch * 25
    rows, cols = np.mgrid[:35, :55]
    d2 = (cols[None] - cx[:, None, None]) ** 2 + (rows[None] - cy[:, None, None]) ** 2
    img = 200 - 170 * np.exp(-d2 / (2 * 3.0**2)) + rng.normal(0, 4, (n, 35, 55))
    return np.clip(img, 0, 255).astype(np.uint8), gaze_from_angles(pitch, yaw)


def hand_data(n, seed, size=48, joints=3):
    rng = np.random.default_rng(seed)
    uv = rng.uniform(10, size - 10, (n, joints, 2))
    rows, cols = np.mgrid[:size, :size]
    depth = np.ones((n, size, size), np.float32)
    for j in range(joints):
        d2 = (cols[None] - uv[:, j, 0, None, None]) ** 2 + (rows[None] - uv[:, j, 1, None, None]) ** 2
        depth = np.minimum(depth, np.where(d2 < 9, 0.2 + 0.02 * d2, 1.0))
    jts = np.concatenate([uv, np.zeros((n, joints, 1))], 2).astype(np.float32)
    return depth.astype(np.float32), jts


def test_gazenet_shapes_and_paper_fc_size():
    assert GazeNet().flat_features == 9600  # the paper's "FC 9600" for 35 x 55
    net = GazeNet(width=0.5, fc=100, batchnorm=True)
    assert net(torch.zeros(4, 1, 35, 55)).shape == (4, 3)
    assert net.features(torch.zeros(4, 1, 35, 55)).shape == (4, 100)
    with pytest.raises(ValueError, match="width"):
        GazeNet(width=0)


def test_handnet_heatmap_shapes():
    assert HandNet()(torch.zeros(2, 1, 64, 64)).shape == (2, 2, 14, 32, 32)
    assert HandNet(channels=8, heatmap_size=64, stacks=1)(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 14, 64, 64)
    assert HandNet(channels=8, in_size=128, heatmap_size=32, depth=2)(torch.zeros(1, 1, 128, 128)).shape == (
        1,
        2,
        14,
        32,
        32,
    )
    with pytest.raises(ValueError, match="heatmap_size"):
        HandNet(heatmap_size=24)
    with pytest.raises(ValueError, match="heatmap_loss"):
        HandNet(heatmap_loss="l2")


def test_heatmap_decoding_subpixel():
    uv = torch.tensor([[[5.3, 7.8], [10.0, 2.45], [1.2, 14.0]]])
    hm = gaussian_heatmaps(uv, 16, 1.0)
    assert torch.allclose(heatmap_to_uv(hm, "argmax"), uv, atol=0.02)
    # soft-argmax is biased towards the centre by the background mass; a symmetric case is exact
    # and off-centre peaks stay within half a pixel once the heat is sharpened.
    centre = torch.tensor([[[7.5, 7.5]]], requires_grad=True)
    sym = heatmap_to_uv(gaussian_heatmaps(centre, 16, 1.0), "soft")
    assert torch.allclose(sym, centre.detach(), atol=1e-4)
    sym.sum().backward()  # differentiable
    hm_sharp = gaussian_heatmaps(uv[:, :2], 16, 1.0) * 10
    assert torch.allclose(heatmap_to_uv(hm_sharp, "soft"), uv[:, :2], atol=0.5)


def test_gaze_training_beats_constant_predictor():
    x, y = dot_gaze_data(640, seed=0)
    xt, yt = dot_gaze_data(200, seed=1)
    model, hist = train_estimator(
        "gaze",
        x,
        y,
        steps=100,
        batch_size=32,
        lr=1e-3,
        seed=0,
        net_kwargs=TINY_GAZE,
        bf16=True,
        channels_last=True,
        log_every=50,
    )
    assert [h["step"] for h in hist] == [50, 100]
    err = angular_error_deg(predict(model, "gaze", xt), yt).mean()
    const = angular_error_deg(constant_prediction("gaze", y, len(yt)), yt).mean()
    assert err < 0.25 * const, (err, const)
    p = predict(model, "gaze", xt[:5])
    assert np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-5)
    assert features(model, "gaze", xt[:5]).shape == (5, 64)


def test_training_is_deterministic_under_seed():
    x, y = dot_gaze_data(64, seed=0)
    aug = photometric_augment("gaze")
    kw = dict(steps=4, batch_size=8, lr=1e-3, net_kwargs=TINY_GAZE, augment=aug)
    a, _ = train_estimator("gaze", x, y, seed=3, **kw)
    b, _ = train_estimator("gaze", x, y, seed=3, **kw)
    c, _ = train_estimator("gaze", x, y, seed=4, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("heatmap_loss, steps, min_pck", [("mse", 60, 90), ("softmax", 120, 75)])
def test_hand_training_localizes_joint_in_stored_pixels(heatmap_loss, steps, min_pck):
    # one joint per image, stored at 48 px, net input 32 px: exercises resize + heatmap decoding
    # (for softmax heatmaps the decoding goes through the probabilities)
    x, j = hand_data(256, seed=0, joints=1)
    xt, jt = hand_data(60, seed=1, joints=1)
    model, hist = train_estimator(
        "hand",
        x,
        j,
        steps=steps,
        batch_size=16,
        lr=2e-3,
        seed=0,
        net_kwargs=dict(TINY_HAND, joints=1, heatmap_loss=heatmap_loss),
        log_every=20,
    )
    assert hist[-1]["loss"] < hist[0]["loss"]
    uv = predict(model, "hand", xt)
    assert uv.shape == (60, 1, 2)
    assert pck_at(uv, jt, 3) >= min_pck > pck_at(constant_prediction("hand", j, 60), jt, 3) + 40
    assert features(model, "hand", xt[:6]).shape == (6, 8 * 16)
    with pytest.raises(ValueError, match="labels"):
        train_estimator("hand", x, j[:, :, :1], steps=1, batch_size=4, lr=1e-3, seed=0, net_kwargs=TINY_HAND)


def test_rotation_keeps_joints_on_features():
    size, n = 48, 4
    x, j = hand_data(n, seed=5, size=size)
    # one isolated dip per joint so each can be re-found after rotation
    gen = torch.Generator().manual_seed(0)
    xr, uvr = rotate_batch(torch.from_numpy(x)[:, None], torch.from_numpy(j[..., :2]), 20.0, gen)
    assert xr.shape == (n, 1, size, size) and uvr.shape == (n, 3, 2)
    assert not torch.allclose(uvr, torch.from_numpy(j[..., :2]))
    img = xr[:, 0].numpy()
    rows, cols = np.mgrid[:size, :size]
    for i in range(n):
        for k in range(3):
            u, v = uvr[i, k].tolist()
            near = (cols - u) ** 2 + (rows - v) ** 2 <= 2.0**2
            # the rotated joint still lands on its (rotated) blob of near depth
            assert img[i][near].min() < 0.35
            w = np.where(((cols - u) ** 2 + (rows - v) ** 2 <= 16) & (img[i] < 0.9), 1.0 - img[i], 0)
            cu, cv = (w * cols).sum() / w.sum(), (w * rows).sum() / w.sum()
            assert math.hypot(cu - u, cv - v) < 0.7
    # corners uncovered by the rotation are background (1.0 = far)
    assert torch.all(xr[:, 0, 0, 0] == 1.0)


def test_save_load_round_trip(tmp_path):
    x, y = dot_gaze_data(32, seed=0)
    model, _ = train_estimator("gaze", x, y, steps=2, batch_size=8, lr=1e-3, seed=0, net_kwargs=TINY_GAZE)
    path = tmp_path / "est" / "gaze.pt"
    save_estimator(path, model, {"source": "synthetic", "seed": 0})
    loaded, meta = load_estimator(path)
    assert meta == {"source": "synthetic", "seed": 0}
    assert isinstance(loaded, GazeNet) and loaded.net_kwargs == model.net_kwargs
    np.testing.assert_array_equal(predict(loaded, "gaze", x), predict(model, "gaze", x))
    assert [p.name for p in path.parent.iterdir()] == ["gaze.pt"]  # no temp files left


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": evil, "task": "gaze", "net_kwargs": {}}, f)
    with pytest.raises(SimganError, match="evil.pt"):
        load_estimator(path)
    assert not marker.exists()
    with pytest.raises(SimganError, match="not found"):
        load_estimator(tmp_path / "missing.pt")


def test_cosine_schedule_anneals_lr_to_zero_over_the_run():
    w = torch.nn.Parameter(torch.zeros(1))
    opt, sched = make_optimizer([w], 0.006, 4, "cosine")
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.006) and lrs[2] == pytest.approx(0.003)
    assert lrs == sorted(lrs, reverse=True) and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert make_optimizer([w], 0.006, 4)[1] is None  # constant
    x, j = hand_data(32, seed=0, joints=1)
    kw = dict(steps=3, batch_size=8, lr=1e-2, seed=0, net_kwargs=dict(TINY_HAND, joints=1))
    a, _ = train_estimator("hand", x, j, lr_schedule="cosine", **kw)
    b, _ = train_estimator("hand", x, j, **kw)
    assert not all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(ValueError, match="lr_schedule"):
        train_estimator("hand", x, j, lr_schedule="step", **kw)


def test_bad_inputs_name_the_parameter():
    x, y = dot_gaze_data(8, seed=0)
    with pytest.raises(ValueError, match="task"):
        train_estimator("eye", x, y, steps=1, batch_size=4, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="steps"):
        train_estimator("gaze", x, y, steps=0, batch_size=4, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="images"):
        train_estimator("gaze", x.transpose(0, 2, 1), y, steps=1, batch_size=4, lr=1e-3, seed=0, net_kwargs=TINY_GAZE)
    with pytest.raises(ValueError, match="net_kwargs"):
        train_estimator("gaze", x, y, steps=1, batch_size=4, lr=1e-3, seed=0, net_kwargs={"widht": 1})
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        predict(GazeNet(**TINY_GAZE), "gaze", x.astype(np.float32))


def test_heatmap_decoding_at_border_keeps_integer_peak():
    hm = gaussian_heatmaps(torch.tensor([[[0.0, 15.0]]]), 16, 1.0)
    assert torch.allclose(heatmap_to_uv(hm), torch.tensor([[[0.0, 15.0]]]))


def _train_tiny_hand(seed, on_step=None):
    x, j = hand_data(64, seed=0, joints=1)
    return train_estimator(
        "hand",
        x,
        j,
        steps=4,
        batch_size=8,
        lr=1e-3,
        seed=seed,
        net_kwargs=dict(TINY_HAND, joints=1),
        augment=photometric_augment("hand"),
        bf16=True,
        channels_last=True,
        on_step=on_step,
    )[0].state_dict()


def test_seeds_in_worker_processes_train_the_same_weights_as_in_process():
    """The estimator stage trains its seeds in forked single-thread workers (simgan.parallel.
    map_processes); the weights must not depend on that (results depend on `compute.threads` only)."""
    from simgan.parallel import map_processes

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inline = dict(map_processes(_train_tiny_hand, [0, 1, 2], workers=1))
        forked = dict(map_processes(_train_tiny_hand, [0, 1, 2], workers=2, threads=1))
    finally:
        torch.set_num_threads(torch_threads)
    assert sorted(forked) == [0, 1, 2]
    for seed in inline:
        assert all(torch.equal(inline[seed][k], forked[seed][k]) for k in inline[seed]), seed
    assert not torch.equal(inline[0]["to_heat.1.weight"], inline[1]["to_heat.1.weight"])


_STEPS = None  # the StepCounter the forked workers of the next test count into (they inherit it)


def _train_tiny_hand_counting(seed):
    return _train_tiny_hand(seed, on_step=_STEPS.add)  # via the global: a shared Value does not pickle


def test_step_progress_from_forked_workers_reaches_the_total_and_trains_the_same_weights():
    """Issue 23: the estimator bar counts every seed's steps as the workers train them (a shared
    StepCounter, drawn by the parent's poll). Counting draws no random number and reorders no
    batch: each seed's weights are those trained without it, and the count reaches steps x seeds."""
    global _STEPS
    from simgan.parallel import StepCounter, map_processes

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    polled = []
    try:
        plain = dict(map_processes(_train_tiny_hand, [0, 1, 2], workers=1))
        _STEPS = StepCounter()
        forked = dict(
            map_processes(
                _train_tiny_hand_counting, [0, 1, 2], workers=2, threads=1, poll=lambda: polled.append(_STEPS.value)
            )
        )
        assert _STEPS.value == 3 * 4 and polled and polled[-1] == 12 and polled == sorted(polled), polled
        _STEPS = StepCounter()
        inline = dict(map_processes(_train_tiny_hand_counting, [0, 1, 2], workers=1))
        assert _STEPS.value == 12
    finally:
        torch.set_num_threads(torch_threads)
        _STEPS = None
    for seed in plain:
        for other in (forked, inline):
            assert all(torch.equal(plain[seed][k], other[seed][k]) for k in plain[seed]), seed


ROOT = Path(__file__).resolve().parents[1]


def test_estimator_config_validate_names_the_field():
    EstimatorConfig(steps=1, batch_size=1, lr=1e-3, bf16="auto").validate()
    for field, value, expected in [
        ("steps", 0, "a positive integer"),
        ("batch_size", 2.5, "a positive integer"),
        ("lr", float("nan"), "a finite number > 0"),
        ("lr_schedule", "step", "one of"),
        ("rotation_deg", -1, ">= 0"),
        ("bf16", "fast", "true, false or 'auto'"),
        ("log_every", -1, ">= 0"),
        ("base_n", 0, "a positive integer"),
        ("net", [1], "a mapping"),
        ("head", "classifier", "one of ['regression']"),
    ]:
        cfg = EstimatorConfig(**{"steps": 1, "batch_size": 1, "lr": 1e-3, field: value})
        with pytest.raises(ValueError, match=rf"^estimator\.{field}: expected .*{re.escape(expected)}.*, got"):
            cfg.validate()


def test_estimator_config_from_params_types_defaults_and_errors():
    def load(section):
        return EstimatorConfig.from_params(Params({"estimator": {"gaze": section}}, "p.yaml"), "gaze")

    base = {"steps": 5, "batch_size": 8, "lr": 1}
    cfg = load({**base, "net": {"width": 0.25}, "bf16": "auto", "device": "auto"})
    assert (cfg.lr, type(cfg.lr), cfg.net, cfg.bf16) == (1.0, float, {"width": 0.25}, "auto")
    assert cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")  # resolved where it is read
    assert (cfg.lr_schedule, cfg.log_every, cfg.base_n, cfg.augment) == ("constant", 100, None, {})  # defaults
    for section, message in [
        (
            {**base, "learning_rate": 0.1},
            r"p.yaml: key 'estimator.gaze.learning_rate': unknown estimator parameter; expected one of \[",
        ),
        ({"steps": 5, "lr": 0.1}, r"p.yaml: key 'estimator.gaze.batch_size': missing"),
        ({**base, "lr": "0.001"}, r"p.yaml: key 'estimator.gaze.lr': expected float, got '0.001'"),
        ({**base, "lr": 0}, r"p.yaml: key 'estimator.gaze.lr': expected a finite number > 0, got 0.0"),
        ({**base, "channels_last": "yes"}, r"p.yaml: key 'estimator.gaze.channels_last': expected bool, got 'yes'"),
        ({**base, "bf16": "fast"}, r"p.yaml: key 'estimator.gaze.bf16': expected true, false or 'auto', got 'fast'"),
        ({**base, "device": "tpu"}, r"p.yaml: key 'estimator.gaze.device': expected 'cpu', 'cuda'"),
        ({**base, "head": "classifier"}, r"p.yaml: key 'estimator.gaze.head': expected one of \['regression'\]"),
    ]:
        with pytest.raises(ParamsError, match=message):
            load(section)
    with pytest.raises(ParamsError, match=r"key 'estimator.hand': missing"):
        EstimatorConfig.from_params(Params({"estimator": {}}), "hand")


def test_shipped_params_read_as_the_estimator_stage_trained_them():
    p = Params.load(ROOT / "params.yaml")
    gaze, hand = (EstimatorConfig.from_params(p, t) for t in ("gaze", "hand"))
    assert (gaze.steps, gaze.batch_size, gaze.lr, gaze.net, gaze.log_every) == (300, 32, 0.001, {"width": 0.5}, 100)
    assert (hand.lr, hand.lr_schedule, hand.rotation_deg, hand.net["heatmap_loss"]) == (
        0.006,
        "cosine",
        20.0,
        "softmax",
    )
    assert (gaze.base_n, hand.base_n) == (4000, 1500)


def test_config_and_keyword_settings_train_the_same_weights():
    x, y = dot_gaze_data(32, seed=0)
    cfg = EstimatorConfig(steps=3, batch_size=8, lr=1e-3, net=TINY_GAZE)
    a, ha = train_estimator("gaze", x, y, cfg, seed=1)
    b, hb = train_estimator("gaze", x, y, steps=3, batch_size=8, lr=1e-3, net_kwargs=TINY_GAZE, seed=1)
    c, _ = train_estimator("gaze", x, y, cfg, seed=1, lr=2e-3)  # a keyword overrides the config's field
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert [h["step"] for h in ha] == [h["step"] for h in hb] == [3]


def test_estimator_stage_trains_from_the_config_and_names_a_bad_key(tmp_path, monkeypatch, capsys):
    """The stage reads estimator.<task> once (EstimatorConfig.from_params) and trains each seed with
    exactly what train_estimator trains from that config; an unknown key stops it, nothing written."""
    import json

    import yaml

    from simgan.data.format import write_dataset

    sys.path.insert(0, str(ROOT))  # stages/ runs as `python -m stages...` from the root
    from stages import estimator as stage

    monkeypatch.chdir(tmp_path)
    x, y = dot_gaze_data(48, seed=0)
    write_dataset(
        tmp_path / "data" / "gaze" / "synthetic.h5",
        {"images": x, "gaze": y},
        dict(task="gaze", domain="synthetic", source="test", generator_version="t", seed=0),
    )
    section = {
        "base_n": 32,
        "steps": 3,
        "batch_size": 8,
        "lr": 0.001,
        "net": TINY_GAZE,
        "bf16": False,
        "channels_last": True,
        "augment": {},
    }
    params = {
        "tasks": {"gaze": {"curve": "error_cdf"}},
        "seeds": [0, 1],
        "compute": {"threads": 1, "workers": 1},
        "variants": {
            "v": {"task": "gaze", "source": "synthetic", "data": "gaze/synthetic.h5", "size": 1, "augment": True}
        },
        "estimator": {"gaze": {**section, "stpes": 4}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"params.yaml: key 'estimator.gaze.stpes': unknown estimator parameter"):
        stage.main(["v"])
    assert not (tmp_path / "models").exists()
    params["estimator"]["gaze"] = section
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    stage.main(["v"])
    printed = capsys.readouterr()
    # stdout: the same lines as before the step bar (issue 23); the bar, on stderr, counts the
    # steps of both seeds (2 x 3) and ends at its total
    lines = printed.out.splitlines()
    assert lines[0] == "estimator v: 2 seeds x 32 synthetic images, 1 worker(s) x 1 thread(s) on cpu", lines
    assert [re.sub(r"in [0-9.]+ s, final loss .*", "", line) for line in lines[1:]] == [
        "estimator v: seed 0 done ",
        "estimator v: seed 1 done ",
    ], lines
    bar = printed.err.replace("\r", "\n").splitlines()
    assert any(re.match(r"estimator v: +100%.* 6/6 .*2/2 seeds", b) for b in bar), bar
    out = tmp_path / "models" / "gaze" / "estimators" / "v"
    cfg = EstimatorConfig(steps=3, batch_size=8, lr=0.001, net=TINY_GAZE, channels_last=True)
    for seed in (0, 1):
        ref, hist = train_estimator("gaze", x[:32], y[:32], cfg, seed=seed, augment=photometric_augment("gaze", {}))
        model, meta = load_estimator(out / f"seed{seed}.pt")
        assert meta["train_file"] == "data/gaze/synthetic.h5"
        assert meta["train_n"] == 32 and all(torch.equal(ref.state_dict()[k], v) for k, v in model.state_dict().items())
        assert (
            [h["step"] for h in json.loads((out / "history.json").read_text())[str(seed)]]
            == [h["step"] for h in hist]
            == [3]
        )
