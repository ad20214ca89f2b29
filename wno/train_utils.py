"""The original description's import path: `from wno.train_utils import train_epoch, validate,
CosineAnnealingWarmupRestarts`. The code lives in `wno.training.train_utils`."""

from wno.training.train_utils import *  # noqa: F403
from wno.training.train_utils import (CosineAnnealingWarmupRestarts, EpochStats, EvalStats,
                                      load_checkpoint, save_checkpoint, train_epoch, validate)

__all__ = ["CosineAnnealingWarmupRestarts", "EpochStats", "EvalStats", "load_checkpoint",
           "save_checkpoint", "train_epoch", "validate"]
