"""Downstream estimators that score S+U learning: the gaze CNN, the stacked-hourglass hand net and,
for a task of the user's own images ("generic"), the gaze CNN's backbone regressing every numeric
label column.

The paper's claim is about these networks (a gaze CNN trained on refined images beats one trained
on synthetic ones), so they are trained many times per experiment (sources x sizes x seeds); the
training loop keeps the data in memory as tensors and offers bf16 autocast + channels_last, which
roughly halve CPU step time. Everything random comes from `seed`, so a variant is reproducible.

Public API
- GazeNet, HandNet, RegressionNet: the networks (``forward`` for training, ``features`` for k-NN
  baselines), each with its kind's label preparation, loss and output decoding.
- label_matrix: a generic file's label columns -> one (N, K) target matrix and its column names.
- EstimatorConfig: the training settings, params.yaml `estimator.<task>` (from_params).
- train_estimator, predict, features: work on arrays in the stored data format; train_estimator is
  data-parallel inside a torch.distributed process group (simgan.distributed's torchrun entry).
- save_estimator, load_estimator: plain-dict checkpoints, loaded with ``weights_only=True``.
- heatmap_to_uv, gaussian_heatmaps: conversions between joints and heatmaps.

Modules: base (what every network shares, stored images -> input), gaze (GazeNet, RegressionNet),
hand (HandNet, heatmaps, rotation), networks (the network of each data kind), training,
inference, checkpoints.
"""

from simgan.data.format import DATA_KINDS
from simgan.estimators.base import EstimatorNet, check_task
from simgan.estimators.checkpoints import CHECKPOINT_VERSION, load_estimator, save_estimator
from simgan.estimators.gaze import GazeNet, RegressionNet, label_matrix
from simgan.estimators.hand import (
    HEATMAP_LOSSES,
    HandNet,
    gaussian_heatmaps,
    heatmap_to_uv,
    rescale_uv,
    rotate_batch,
    soft_argmax,
)
from simgan.estimators.inference import INFERENCE_BATCH, features, predict
from simgan.estimators.networks import NETS, build_estimator, images_to_input, read_training_labels
from simgan.estimators.training import LR_SCHEDULES, EstimatorConfig, batch_slice, make_optimizer, train_estimator

__all__ = [
    "CHECKPOINT_VERSION",
    "DATA_KINDS",
    "HEATMAP_LOSSES",
    "INFERENCE_BATCH",
    "LR_SCHEDULES",
    "NETS",
    "EstimatorConfig",
    "EstimatorNet",
    "GazeNet",
    "HandNet",
    "RegressionNet",
    "batch_slice",
    "build_estimator",
    "check_task",
    "features",
    "gaussian_heatmaps",
    "heatmap_to_uv",
    "images_to_input",
    "label_matrix",
    "load_estimator",
    "make_optimizer",
    "predict",
    "read_training_labels",
    "rescale_uv",
    "rotate_batch",
    "save_estimator",
    "soft_argmax",
    "train_estimator",
]
