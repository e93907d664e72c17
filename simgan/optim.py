"""The optimizer every training loop here uses: Adam with torch's fused kernel.

The default (per-tensor) Adam reads and writes each parameter, gradient and moment tensor about
ten times per step. On the CPU that is memory traffic, not arithmetic: the gaze CNN's 4.8M-weight
FC layer made `optimizer.step()` ~45% of an estimator step. The fused kernel does the update in
one pass: gaze-estimator training 1.97x faster, hand estimator 1.07x, GAN step unchanged (0.98x;
small conv nets) on this 2-core machine (`python -m benchmarks.bench_optim`). It is
elementwise, so a result does not depend on the thread count, and it differs from the
per-tensor loop only in rounding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: Sequence[float] = (0.9, 0.999)) -> torch.optim.Adam:
    """torch.optim.Adam(params, lr, betas) with the fused update (CPU and CUDA alike)."""
    return torch.optim.Adam(params, lr=lr, betas=(float(betas[0]), float(betas[1])), fused=True)
