"""Where the pipeline keeps a task's files: the paths dvc.yaml declares, relative to the
repository root, for the stages, the library code that runs a stage's work outside DVC (the
sharded refinement) and the Prefect flow."""

from __future__ import annotations

from pathlib import Path


def data_path(task: str, name: str) -> Path:
    """data/<task>/<name>.h5 with name in synthetic | real | real_test | refined."""
    return Path("data") / task / f"{name}.h5"


def refiner_path(task: str) -> Path:
    """models/<task>/refiner.pt: the adversarial stage's trained refiner (a model file,
    simgan.checkpoint.load_refiner)."""
    return Path("models") / task / "refiner.pt"
