"""Where the pipeline keeps a task's files: the paths dvc.yaml declares, relative to the
repository root, for the stages, the library code that runs a stage's work outside DVC (the
sharded refinement) and the Prefect flow.

Each seed k of params.yaml `seeds` is one whole-pipeline replicate: its own pretrained and
adversarially trained refiner, its own refined set and the estimators trained on it. A
replicate's files are `seed<k>` files inside one directory per kind, which is the DVC output of
the stage that writes them (models/<task>/pretrained/, models/<task>/refiners/,
data/<task>/refined/)."""

from __future__ import annotations

from pathlib import Path


def data_path(task: str, name: str) -> Path:
    """data/<task>/<name>.h5 with name in synthetic | real | real_test (the prepare stage's files;
    the refined sets are one per replicate: refined_path)."""
    return Path("data") / task / f"{name}.h5"


def replicate_file(directory: str | Path, seed: int, suffix: str) -> Path:
    """<directory>/seed<k><suffix>: replicate k's file of one kind."""
    return Path(directory) / f"seed{seed}{suffix}"


def pretrained_dir(task: str) -> Path:
    """models/<task>/pretrained/: the pretrain stage's trainer checkpoints, one per replicate."""
    return Path("models") / task / "pretrained"


def refiners_dir(task: str) -> Path:
    """models/<task>/refiners/: the adversarial stage's trained refiners, one per replicate."""
    return Path("models") / task / "refiners"


def refined_dir(task: str) -> Path:
    """data/<task>/refined/: the refine stage's refined sets, one per replicate."""
    return Path("data") / task / "refined"


def pretrained_path(task: str, seed: int) -> Path:
    return replicate_file(pretrained_dir(task), seed, ".pt")


def refiner_path(task: str, seed: int) -> Path:
    """Replicate `seed`'s trained refiner (a model file, simgan.checkpoint.load_refiner)."""
    return replicate_file(refiners_dir(task), seed, ".pt")


def refined_path(task: str, seed: int) -> Path:
    """Replicate `seed`'s refined set: the synthetic set through its refiner, labels unchanged."""
    return replicate_file(refined_dir(task), seed, ".h5")
