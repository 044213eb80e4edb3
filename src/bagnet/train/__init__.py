"""Training and evaluation: BagNets of any patch size and width, the standard CNNs and the ViT they are compared with.

- ``config``: one :class:`TrainConfig` saved as ``config.yaml`` beside every run; the same fields are CLI flags.
- ``splits``: augmentation, train/hold-out/val splits, seeded per-epoch batches: every epoch's data order and every
  sample's augmentation are functions of (seed, epoch, index).
- ``loop``: :func:`train`; the checkpoint holds the model, optimiser and RNG states, so ``resume=True`` continues a
  killed run to the same weights it would have reached without the kill (written atomically every epoch and on
  Ctrl-C); a run whose loss becomes non-finite stops and keeps its last checkpoint.
- ``distributed``: run the same command under ``torchrun --nproc_per_node N``; DistributedDataParallel with NCCL on
  GPUs and Gloo on CPUs, each rank taking its share of every global batch; rank 0 logs and writes checkpoints.
- ``evaluation``: :func:`evaluate` and :func:`predict`.
"""

from .config import (AUGMENTS, CHECKPOINT, TrainConfig, build_model,  # noqa: F401
                     model_metadata)
from .distributed import GlobalBatchNorm2d, any_rank, dist_info, use_global_batchnorm  # noqa: F401
from .evaluation import (EvaluationResult, check_categories, evaluate, evaluate_accuracy,  # noqa: F401
                         model_outputs, predict, topk_accuracy)
from .checkpoint import read_run_checkpoint
from .result import EpochMetrics, TrainResult
from .loop import (autocast_dtype, compiled, lr_at,  # noqa: F401
                   train, train_step)
from .splits import (EpochBatches, SeededSamples, Splits, eval_transform, make_splits,  # noqa: F401
                     mix_batch, sample_seed, train_transform)
from ..data import sample_path  # noqa: F401  (lived here before 0.2)

__all__ = [
    "TrainConfig", "build_model", "model_metadata", "train", "train_step", "TrainResult", "EpochMetrics", "read_run_checkpoint",
    "autocast_dtype", "compiled", "lr_at", "make_splits", "Splits", "train_transform", "eval_transform", "mix_batch",
    "EpochBatches", "SeededSamples", "sample_seed", "GlobalBatchNorm2d", "use_global_batchnorm", "evaluate",
    "predict", "topk_accuracy", "evaluate_accuracy", "EvaluationResult", "check_categories", "model_outputs",
]
