import numpy as np
import pytest
import torch

from simgan.augment import DEFAULT_STRENGTHS, depth_edges, photometric_augment


def gaze_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(35).view(35, 1).float()
    cols = torch.arange(55).view(1, 55).float()
    base = 0.6 - 1.4 * torch.exp(-((rows - 17) ** 2 + (cols - 27) ** 2) / 18)
    return (base + 0.05 * torch.randn(n, 1, 35, 55, generator=g)).clamp(-1, 1)


def hand_batch(n=8, size=32):
    x = torch.ones(n, 1, size, size)
    x[:, :, 8:24, 10:22] = torch.linspace(-0.4, 0.2, 12)  # a hand-like slab, background 1.0 = far
    return x


ALL_ON = {
    "gaze": {k: (1.0 if k.endswith("_p") else v) for k, v in DEFAULT_STRENGTHS["gaze"].items()},
    "hand": {k: (1.0 if k.endswith("_p") else v) for k, v in DEFAULT_STRENGTHS["hand"].items()},
}


@pytest.mark.parametrize("task,batch", [("gaze", gaze_batch()), ("hand", hand_batch())])
def test_deterministic_under_seed_and_changes_images(task, batch):
    aug = photometric_augment(task, ALL_ON[task])
    a = aug(batch.clone(), torch.Generator().manual_seed(7))
    b = aug(batch.clone(), torch.Generator().manual_seed(7))
    c = aug(batch.clone(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, batch)
    assert a.shape == batch.shape and a.min() >= -1 and a.max() <= 1
    # kornia/torch global RNG is not consulted: re-seeding it changes nothing
    torch.manual_seed(123)
    assert torch.equal(aug(batch.clone(), torch.Generator().manual_seed(7)), a)


@pytest.mark.parametrize("task,batch", [("gaze", gaze_batch()), ("hand", hand_batch())])
def test_all_zero_strengths_is_identity(task, batch):
    zero = {k: 0.0 for k in DEFAULT_STRENGTHS[task]}
    out = photometric_augment(task, zero)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, batch)


@pytest.mark.parametrize("op", ["noise_std", "blur_sigma", "gamma", "contrast", "equalize_p"])
def test_each_gaze_op_alone_changes_images(op):
    s = {k: 0.0 for k in DEFAULT_STRENGTHS["gaze"]}
    s[op] = DEFAULT_STRENGTHS["gaze"][op]
    if op != "equalize_p":
        s[op.split("_")[0] + "_p"] = 1.0
    x = gaze_batch(8)
    out = photometric_augment("gaze", s)(x, torch.Generator().manual_seed(1))
    assert (out - x).abs().mean() > 1e-3, op


def test_hand_ops_touch_only_the_hand():
    x = hand_batch()
    out = photometric_augment("hand", ALL_ON["hand"])(x, torch.Generator().manual_seed(3))
    bg = x == 1.0
    assert torch.all(out[bg] == 1.0)  # background stays far; noise never leaks into it
    changed_to_far = (out == 1.0) & ~bg
    assert changed_to_far.any()  # holes / erosion
    # erosion alone sets only edge pixels to far
    s = {k: 0.0 for k in DEFAULT_STRENGTHS["hand"]}
    s.update(erode=1.0, erode_p=1.0, edge_threshold=0.1)
    er = photometric_augment("hand", s)(x, torch.Generator().manual_seed(3))
    eroded = (er == 1.0) & ~bg
    edges = depth_edges(x, 0.1)
    assert eroded.any() and torch.all(edges[eroded])
    assert edges[:, :, 8, 12].all() and not edges[:, :, 16, 16].any()


def test_bad_strengths_are_rejected():
    with pytest.raises(ValueError, match="noise"):
        photometric_augment("gaze", {"noise": 0.1})
    with pytest.raises(ValueError, match="blur_p"):
        photometric_augment("gaze", {"blur_p": 2})
    with pytest.raises(ValueError, match="task"):
        photometric_augment("eyes", {})
    with pytest.raises(ValueError, match="batch"):
        photometric_augment("gaze")(np.zeros((1, 1, 35, 55)), torch.Generator())
