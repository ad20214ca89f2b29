"""The training layer: a configuration, the data, the loop, and what a run costs.

    config       TrainConfig: one dataclass holding every knob, passed whole
    data         CIFAR-10 (torchvision / ImageFolder tree / zip / synthetic), device-resident batches
    loop         train(config, callbacks) -> TrainResult: the one call the platform makes per trial
    train_utils  train_epoch, validate, CosineAnnealingWarmupRestarts, checkpoints (the seed's API)
    measure      parameters, FLOPs and throughput of a model
    compare      `wno compare`: W-MSA against its ViT twin, side by side

It imports the model layer and `wno.base`, never the platform or the CLI.

    >>> from wno.training import TrainConfig, train
    >>> TrainConfig(model="vit", model_size="micro").validate().model
    'vit'
"""

from wno.training.config import ConfigError, TrainConfig
from wno.training.loop import Callback, EpochMetrics, RunInfo, StepProgress, TrainResult, train

__all__ = ["Callback", "ConfigError", "EpochMetrics", "RunInfo", "StepProgress", "TrainConfig",
           "TrainResult", "train"]
