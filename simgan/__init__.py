"""simgan: S+U learning (Shrivastava et al., CVPR 2017), correct, measured and fast.

The library is importable and testable without DVC or Prefect; `stages/` and `flows/` build on it,
never the other way round.
"""

__version__ = "0.1.0"
