"""Evaluation metrics and baselines for S+U learning (issue 11).

- gaze: angular error, its summary (mean / median / % within 7 deg, the paper's Table 2) and CDF;
- hand: PCK (% of joints within d pixels, the paper's Table 4 at d = 5);
- label preservation: pupil-centre shift between synthetic and refined eyes (paper 1.1 +- 0.8 px)
  and depth change at joint pixels for hands;
- realism: an automated visual Turing test (a fresh CNN told to separate real from other), and
  the Kernel Inception Distance between two feature sets (kid);
- baselines every result must beat: the constant (mean-label) predictor and k-NN.

Arrays are numpy in the stored data format; results are plain floats / lists for JSON metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from simgan.data.format import unit_to_pixels
from simgan.device import autocast, resolve_device
from simgan.estimators import check_task, images_to_input
from simgan.nets import highpass_residual
from simgan.optim import adam
from simgan.sim.eyes import equalize_histograms


def _arr(x, name: str, last: int | None = None, dtype=np.float64) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if last is not None and (a.ndim < 1 or a.shape[-1] != last):
        raise ValueError(f"{name}: expected an array of shape (..., {last}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values, found NaN/inf")
    return a


# ----------------------------------------------------------------------------------------------
# Gaze


def angular_error_deg(pred, true) -> np.ndarray:
    """Angle in degrees between gaze vectors (..., 3); both are normalized first.

    atan2(|a x b|, a . b) stays accurate near 0 and 180 deg, where arccos of a rounded dot loses
    precision (arccos(1 - 1e-16) is already ~1e-6 deg off) or leaves its domain."""
    p, t = _arr(pred, "pred", 3), _arr(true, "true", 3)
    for name, a in (("pred", p), ("true", t)):
        if np.any(np.linalg.norm(a, axis=-1) == 0):
            raise ValueError(f"{name}: gaze vectors must be non-zero")
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    cross = np.linalg.norm(np.cross(p, t), axis=-1)
    dot = np.sum(p * t, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def _errors(errors, name="errors") -> np.ndarray:
    e = _arr(errors, name).ravel()
    if e.size == 0:
        raise ValueError(f"{name}: expected at least one value")
    return e


def error_cdf(errors, thresholds: Iterable[float]) -> list[float]:
    """% of errors <= each threshold."""
    e = _errors(errors)
    return [float(100.0 * np.mean(e <= t)) for t in thresholds]


def gaze_summary(errors) -> dict[str, float]:
    e = _errors(errors)
    return {
        "mean_error_deg": float(e.mean()),
        "median_error_deg": float(np.median(e)),
        "within7_pct": error_cdf(e, [7.0])[0],
    }


# ----------------------------------------------------------------------------------------------
# User tasks (regression over label columns)


def regression_summary(pred, true, scale, columns: Sequence[str]) -> tuple[dict[str, float], np.ndarray]:
    """User-task (N, K) predictions -> ({"mae", "rmse": over all columns, in units of `scale` (one
    positive number per column, the test set's std, so columns in different units add up);
    "mae_<col>", "rmse_<col>": in label units}, per-image mean standardized |error|)."""
    p, t, sc = _arr(pred, "pred"), _arr(true, "true"), _arr(scale, "scale")
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"pred/true: expected two (N, K) arrays of one shape, got {p.shape}, {t.shape}")
    if sc.shape != (t.shape[1],) or not np.all(sc > 0):
        raise ValueError(f"scale: expected {t.shape[1]} positive numbers (one per column), got {sc}")
    err = np.abs(p - t)
    z = err / sc
    if len(columns) != err.shape[1]:
        raise ValueError(f"columns: expected {err.shape[1]} names, got {len(columns)}")
    out = {"mae": float(z.mean()), "rmse": float(np.sqrt((z**2).mean()))}
    for j, c in enumerate(columns):
        out[f"mae_{c}"] = float(err[:, j].mean())
        out[f"rmse_{c}"] = float(np.sqrt((err[:, j] ** 2).mean()))
    return out, z.mean(axis=1)


# ----------------------------------------------------------------------------------------------
# Hand


def _joint_dist(pred_uv, true_uv) -> np.ndarray:
    p = _arr(pred_uv, "pred_uv")
    t = _arr(true_uv, "true_uv")
    if p.ndim < 2 or t.ndim < 2 or p.shape[-1] < 2 or t.shape[-1] < 2:
        raise ValueError(
            f"pred_uv/true_uv: expected (N, J, 2) (extra trailing columns ignored), got {p.shape}, {t.shape}"
        )
    p, t = p[..., :2], t[..., :2]
    if p.shape != t.shape:
        raise ValueError(f"pred_uv: expected the shape of true_uv {t.shape}, got {p.shape}")
    return np.linalg.norm(p - t, axis=-1).ravel()


def pck_curve(pred_uv, true_uv, thresholds: Iterable[float] = range(21)) -> list[float]:
    """% of joints whose predicted (u, v) lies within d pixels of the truth, for each d."""
    d = _joint_dist(pred_uv, true_uv)
    return [float(100.0 * np.mean(d <= t)) for t in thresholds]


def pck_at(pred_uv, true_uv, d: float = 5.0) -> float:
    return pck_curve(pred_uv, true_uv, [d])[0]


# ----------------------------------------------------------------------------------------------
# Label preservation


def pupil_centres(images, smooth_sigma: float = 1.5, percentile: float = 3.0) -> np.ndarray:
    """Sub-pixel pupil centres (N, 2) as (x=col, y=row) from gaze images (N, H, W).

    Per image: Gaussian smoothing (suppresses noise and thin dark lashes, favouring the compact
    pupil), threshold at the `percentile`-th darkest smoothed value, keep the connected dark blob
    that holds the darkest pixel, and return its centroid weighted by how far below the threshold
    each pixel is. The darkest-blob rule is a heuristic: it is meant for comparing the same eye
    before and after refinement (pupil_shift_px), where its bias largely cancels."""
    a = np.asarray(images)
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty (N, H, W) array, got shape {a.shape}")
    if not 0 < percentile < 100:
        raise ValueError(f"percentile: expected in (0, 100), got {percentile}")
    a = a.astype(np.float64)
    s = ndimage.gaussian_filter(a, sigma=(0, smooth_sigma, smooth_sigma), mode="nearest") if smooth_sigma > 0 else a
    thr = np.percentile(s.reshape(len(s), -1), percentile, axis=1)
    out = np.empty((len(s), 2))
    rows, cols = np.mgrid[: s.shape[1], : s.shape[2]]
    for i, (img, t) in enumerate(zip(s, thr)):
        r0, c0 = np.unravel_index(np.argmin(img), img.shape)
        mask = img <= t
        lab, _ = ndimage.label(mask)
        blob = lab == lab[r0, c0]
        w = np.where(blob, t - img, 0.0)
        tot = w.sum()
        if tot <= 0:  # flat image: the blob is a plateau, take its plain centroid
            w, tot = blob.astype(np.float64), blob.sum()
        out[i] = (np.sum(w * cols) / tot, np.sum(w * rows) / tot)
    return out


def pupil_shift_px(synthetic_images, refined_images) -> tuple[float, float]:
    """(mean, std) pixel distance between pupil centres before and after refinement (std as mean_std)."""
    syn, ref = np.asarray(synthetic_images), np.asarray(refined_images)
    if syn.shape != ref.shape:
        raise ValueError(f"refined_images: expected the shape of synthetic_images {syn.shape}, got {ref.shape}")
    d = np.linalg.norm(pupil_centres(syn) - pupil_centres(ref), axis=1)
    ms = mean_std(d)
    return ms["mean"], ms["std"]


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample (N, H, W) at (N, J) sub-pixel (u=col, v=row); coordinates are clamped to the image."""
    n, h, w = img.shape
    u, v = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    u0, v0 = (
        np.minimum(np.floor(u).astype(int), w - 2 if w > 1 else 0),
        np.minimum(np.floor(v).astype(int), h - 2 if h > 1 else 0),
    )
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = u - u0, v - v0
    b = np.arange(n)[:, None]
    top = img[b, v0, u0] * (1 - fu) + img[b, v0, u1] * fu
    bot = img[b, v1, u0] * (1 - fu) + img[b, v1, u1] * fu
    return top * (1 - fv) + bot * fv


def joint_depth_shift(synthetic_depth, refined_depth, joints) -> float:
    """Mean |refined - synthetic| normalized depth, sampled bilinearly at the joints' (u, v)."""
    syn, ref = _arr(synthetic_depth, "synthetic_depth"), _arr(refined_depth, "refined_depth")
    j = _arr(joints, "joints")
    if syn.ndim != 3 or syn.shape != ref.shape:
        raise ValueError(f"refined_depth: expected (N, S, S) matching synthetic_depth {syn.shape}, got {ref.shape}")
    if j.ndim != 3 or j.shape[0] != syn.shape[0] or j.shape[2] < 2:
        raise ValueError(f"joints: expected ({syn.shape[0]}, J, 2 or 3), got {j.shape}")
    u, v = j[..., 0], j[..., 1]
    return float(np.mean(np.abs(_bilinear(ref, u, v) - _bilinear(syn, u, v))))


# ----------------------------------------------------------------------------------------------
# Realism: automated visual Turing test


class _RealismNet(nn.Module):
    """Small fully-convolutional classifier; global pooling makes it size-agnostic.

    It sees each image beside its high-pass residual (the image minus its 3x3 mean, scaled by
    RESIDUAL_GAIN). The gaps between simulated and real images here are mostly sensor texture
    (noise, quantization, flying pixels, holes) on large smooth shapes; on hand depth maps, 86%
    flat background, the classifier without the residual stayed at chance after 200 steps for
    raw synthetic vs real (50.0%), and with it told them apart (97.7-99.0% over 3 seeds).

    GroupNorm, not BatchNorm: on hand depth maps BatchNorm's running statistics did not match its
    training-batch statistics, and in eval mode every test image fell on one side."""

    RESIDUAL_GAIN = 10.0

    def __init__(self, c: int = 32, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2 * in_channels, c // 2, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1),
            nn.GroupNorm(8, c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * c, 1),
        )

    def forward(self, x):
        return self.body(torch.cat([x, highpass_residual(x, self.RESIDUAL_GAIN)], dim=1)).squeeze(1)


def pose_matched_rows(pool, query) -> np.ndarray:
    """For each row of `query` (N, ...) labels, the row of `pool` (M >= N, ...) with the nearest
    labels, each pool row used once (greedy in query order; every label column standardized over
    the pool). Indexing a synthetic or refined set with it gives a set with the query's label
    distribution: the realism classifier on pose-matched sets cannot win on the poses alone, which
    a label-keeping refiner cannot change (docs/experiments.md, session 13)."""
    p = _arr(pool, "pool").reshape(len(pool), -1)
    q = _arr(query, "query").reshape(len(query), -1)
    if p.shape[1] != q.shape[1] or len(q) == 0 or len(p) < len(q):
        raise ValueError(
            f"pose matching: expected at least as many pool rows as query rows ({len(q)}) with the same "
            f"label columns, got pool {p.shape} and query {q.shape}"
        )
    mu, sd = p.mean(0), p.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    p, q = (p - mu) / sd, (q - mu) / sd
    taken, rows = np.zeros(len(p), bool), np.empty(len(q), np.int64)
    for i, x in enumerate(q):
        d = ((p - x) ** 2).sum(1)
        d[taken] = np.inf
        rows[i] = j = int(d.argmin())
        taken[j] = True
    return rows


def realism_accuracy(
    real_images,
    other_images,
    task: str,
    *,
    seed: int,
    steps: int = 300,
    batch_size: int = 64,
    test_fraction: float = 0.3,
    lr: float = 1e-3,
    device="cpu",
    bf16: bool = False,
) -> float:
    """% of held-out images a fresh CNN classifies correctly as real vs other (50 = indistinguishable).

    The larger set is subsampled so the classes are balanced; each class is split train/test by
    `test_fraction`; the classifier sees only the train split. Deterministic under `seed` on CPU."""
    check_task(task)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected in (0, 1), got {test_fraction}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps/batch_size: expected >= 1, got {steps}/{batch_size}")
    real = images_to_input(real_images, task, "real_images")
    other = images_to_input(other_images, task, "other_images")
    if real.shape[1:] != other.shape[1:]:
        raise ValueError(f"other_images: expected images of size {tuple(real.shape[2:])}, got {tuple(other.shape[2:])}")
    n = min(len(real), len(other))
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 1:
        raise ValueError(
            f"real_images/other_images: need enough images for a train and a test split, got {n} per class"
        )
    rng = np.random.default_rng(seed)
    pr, po = rng.permutation(len(real))[:n], rng.permutation(len(other))[:n]
    xr, xo = real[torch.from_numpy(pr)], other[torch.from_numpy(po)]
    x_tr = torch.cat([xr[n_test:], xo[n_test:]])
    y_tr = torch.cat([torch.ones(n - n_test), torch.zeros(n - n_test)])
    x_te = torch.cat([xr[:n_test], xo[:n_test]])
    y_te = torch.cat([torch.ones(n_test), torch.zeros(n_test)])
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _RealismNet(in_channels=real.shape[1]).to(dev)
    x_tr, y_tr = x_tr.to(dev), y_tr.to(dev)
    opt = adam(net.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x_tr), (min(batch_size, len(x_tr)),), generator=gen).to(dev)
        with autocast(dev, bf16):
            logit = net(x_tr[idx])
        loss = F.binary_cross_entropy_with_logits(logit.float(), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    correct = 0
    with torch.no_grad(), autocast(dev, bf16):
        for s in range(0, len(x_te), 512):
            pred = net(x_te[s : s + 512].to(dev)).float().cpu() > 0
            correct += int((pred == (y_te[s : s + 512] > 0.5)).sum())
    return 100.0 * correct / len(x_te)


# ----------------------------------------------------------------------------------------------
# Baselines


def kid(x, y, *, subset_size: int = 250, subsets: int = 50, seed: int = 0) -> list[float]:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
    estimate of the squared MMD between the feature sets x (n, d) and y (m, d) under the cubic
    polynomial kernel k(a, b) = (a.b / d + 1)^3, on `subsets` random draws of `subset_size` rows
    of each (without replacement within a draw), one value per draw. Its expectation is 0 for two
    samples of one distribution, whatever the sample size (unlike FID's), so a value may dip
    below 0; the spread over draws is the estimate's own."""
    a_all, b_all = _arr(x, "x", dtype=np.float64), _arr(y, "y", dtype=np.float64)
    if a_all.ndim != 2 or b_all.ndim != 2 or a_all.shape[1] != b_all.shape[1]:
        raise ValueError(f"kid: expected two (n, d) feature arrays of one d, got {a_all.shape} and {b_all.shape}")
    m = subset_size
    if m < 2 or m > min(len(a_all), len(b_all)):
        raise ValueError(f"kid: subset_size: expected 2..{min(len(a_all), len(b_all))} (the smaller set), got {m}")
    if subsets < 1:
        raise ValueError(f"kid: subsets: expected >= 1, got {subsets}")
    d = a_all.shape[1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(subsets):
        a = a_all[rng.choice(len(a_all), m, replace=False)]
        b = b_all[rng.choice(len(b_all), m, replace=False)]
        kaa, kbb, kab = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        within = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        out.append(float(within - 2 * kab.mean()))
    return out


def _infer_task(labels: np.ndarray) -> str:
    return "gaze" if labels.ndim == 2 and labels.shape[1] == 3 else "hand"


def _finish(task: str, y: np.ndarray) -> np.ndarray:
    if task == "gaze":
        norm = np.linalg.norm(y, axis=-1, keepdims=True)
        return (y / np.where(norm > 0, norm, 1.0)).astype(np.float32)
    if task == "generic":
        return y
    return y[..., :2].astype(np.float32)


def constant_prediction(task: str, train_labels, n: int) -> np.ndarray:
    """The training set's mean label, repeated n times: gaze (n, 3) renormalized mean vector;
    hand (n, J, 2) mean (u, v) per joint; generic (n, K) float64 mean of each label column. Every
    estimator must beat this."""
    check_task(task)
    y = _arr(train_labels, "train_labels")
    if len(y) == 0:
        raise ValueError("train_labels: expected at least one label")
    if task == "gaze" and y.shape[1:] != (3,):
        raise ValueError(f"train_labels: expected gaze (N, 3), got {y.shape}")
    if task == "generic" and y.ndim != 2:
        raise ValueError(f"train_labels: expected generic (N, K) label columns, got {y.shape}")
    if task == "hand" and (y.ndim != 3 or y.shape[2] < 2):
        raise ValueError(f"train_labels: expected hand joints (N, J, 2 or 3), got {y.shape}")
    if int(n) < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    mean = _finish(task, y.mean(0))
    return np.repeat(mean[None], int(n), axis=0)


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = train.mean(0)
    sd = train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def knn_predict(
    train_features,
    train_labels,
    test_features,
    k: int = 5,
    metric: str = "cosine",
    task: str | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """Mean label of the k nearest training samples for each test row.

    Features are standardized with the training set's per-feature mean/std; `metric` "cosine" or
    "l2". Test rows are processed `chunk` at a time so memory stays O(chunk x N_train). Gaze
    predictions are renormalized; `task` is inferred from the label shape ((N, 3) -> gaze) if None."""
    tr = _arr(train_features, "train_features", dtype=np.float32)
    te = _arr(test_features, "test_features", dtype=np.float32)
    y = _arr(train_labels, "train_labels")
    tr, te = tr.reshape(len(tr), -1), te.reshape(len(te), -1)
    if tr.shape[1] != te.shape[1]:
        raise ValueError(f"test_features: expected {tr.shape[1]} features per row, got {te.shape[1]}")
    if len(y) != len(tr):
        raise ValueError(f"train_labels: expected {len(tr)} rows (one per train feature), got {len(y)}")
    if not 1 <= k <= len(tr):
        raise ValueError(f"k: expected 1..{len(tr)}, got {k}")
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric: expected 'cosine' or 'l2', got {metric!r}")
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    task = task or _infer_task(y)
    check_task(task)
    tr, te = _standardize(tr, te)
    if metric == "cosine":
        tr = tr / np.maximum(np.linalg.norm(tr, axis=1, keepdims=True), 1e-8)
        te = te / np.maximum(np.linalg.norm(te, axis=1, keepdims=True), 1e-8)
    tr_sq = (tr**2).sum(1)
    out = np.empty((len(te),) + y.shape[1:], dtype=np.float64)
    for s in range(0, len(te), chunk):
        q = te[s : s + chunk]
        # Ranking by -2 q.t + |t|^2 is the L2 ranking (|q|^2 is constant per row); on unit vectors
        # it is also the cosine ranking.
        d = tr_sq[None, :] - 2.0 * (q @ tr.T)
        nn_idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        out[s : s + chunk] = y[nn_idx].mean(1)
    return _finish(task, out)


def equalized_pixel_features(images) -> np.ndarray:
    """(N, H*W) float32: histogram-equalized pixels, each image standardized (zero mean, unit std).

    Float images in [-1, 1] (refined, or hand depth) are quantized to 256 levels first. This is the
    paper's k-NN baseline representation for gaze (the real MPIIGaze images are equalized)."""
    a = np.asarray(images)
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty (N, H, W) array, got {a.shape}")
    if a.dtype != np.uint8:
        a = _arr(a, "images")
        if a.min() < -1 - 1e-4 or a.max() > 1 + 1e-4:
            raise ValueError(f"images: float images must lie in [-1, 1], got [{a.min():.3g}, {a.max():.3g}]")
        a = unit_to_pixels(a)
    f = equalize_histograms(a).reshape(len(a), -1).astype(np.float32)
    f -= f.mean(1, keepdims=True)
    sd = f.std(1, keepdims=True)
    return f / np.where(sd > 1e-8, sd, 1.0)


# ----------------------------------------------------------------------------------------------
# Aggregation


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std"} over seeds/runs. std is the SAMPLE std (ddof=1) when n > 1, 0.0 for n == 1."""
    v = _errors(values, "values")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
