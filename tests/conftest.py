"""Test-session settings.

One intra-op thread per test process: tests are small, and under a loaded machine two OpenMP
threads contending for two busy cores made tiny convolutions ~30x slower (spin-wait barriers).
The suite is parallel across processes instead (pytest -n 2)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import torch

torch.set_num_threads(1)
