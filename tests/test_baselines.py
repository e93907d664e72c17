"""Issue 11: augmentation is a training-time baseline only, and it is seeded."""

import numpy as np
import torch

from simgan.augment import photometric_augment
from simgan.estimators import predict, train_estimator


def _gaze_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return rng.integers(0, 256, (n, 35, 55), dtype=np.uint8), g


def test_augmentation_runs_only_while_training_and_is_seeded():
    images, labels = _gaze_data()
    base = photometric_augment("gaze")
    calls = []

    def counting(batch, generator):
        calls.append(batch.shape[0])
        return base(batch, generator)

    kw = dict(steps=3, batch_size=8, lr=1e-3, net_kwargs={"width": 0.25})
    model, _ = train_estimator("gaze", images, labels, seed=5, augment=counting, **kw)
    assert calls == [8, 8, 8]  # once per training batch
    before = predict(model, "gaze", images)
    assert len(calls) == 3  # prediction never augments
    assert np.array_equal(before, predict(model, "gaze", images))
    again, _ = train_estimator("gaze", images, labels, seed=5, augment=photometric_augment("gaze"), **kw)
    plain, _ = train_estimator("gaze", images, labels, seed=5, augment=None, **kw)
    sa, sb, sc = model.state_dict(), again.state_dict(), plain.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same augmented run
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # and augmentation did change training
