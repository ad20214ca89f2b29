"""What the platform stores about studies and trials: the names every module agrees on.

The queue and worker write these; tracking and the report read them. Keep this file the single
source of truth: change a name here and nowhere else.

Optuna study user attrs
    SPEC        the study definition as a plain dict (what `wno study create` read)
    SPEC_HASH   hash of that definition (a changed definition under the same name is refused)
    KIND        "grid" or "search"
    STUDY_UID   the study's identity in its storage (random; written at creation, or on first use
                for a study created before identities); keys <checkpoint root>/<study>/<uid>/
    PARAM_SPACE the categorical choices of its factors as Optuna params (wno.platform.params)
    DEFAULTS    TrainConfig.defaults() when the definition was stored: the fields it leaves unset
                keep them after an upgrade changes a default (absent: inferred from the trials)

Optuna trial user attrs (set when the trial is enqueued, unless noted)
    CONFIG       the trial's TrainConfig as a flat dict, machine fields excluded
    CONFIG_HASH  TrainConfig.config_hash()
    ROLE         "model" (a W-MSA configuration of the grid) or "baseline" (a ViT twin)
    FACTORS      {factor: value} for the grid factors of this trial; a baseline carries its
                 baseline name under "baseline" plus the factors it shares (e.g. model_size)
    GROUP        a readable label of the configuration without the seed, e.g.
                 "use_kernel=True, wavelet=haar, n_levels=3" or "baseline=vit"
    SEED         the seed
    METRICS      (on completion) TrainResult.metrics(): final/best val acc, test acc, params, ...
    MLFLOW_RUN   (when tracked) the MLflow run id of this configuration
    HOST, DEVICE (when picked up) where it ran
    ERROR        (on failure) the error, one line, secrets masked
    RETRY_OF     (on a retry) the trial number it replaces

Optuna trial system attrs
    HEARTBEAT_INTERVAL  the popping worker's heartbeat interval (seconds); the trial counts as
                        lost after 4 missed intervals

MLflow: one experiment per study, named after the study; one run per configuration and seed;
per-epoch metrics are EPOCH_METRICS at step=epoch, final ones are FINAL_METRICS.
"""

SPEC = "wno_spec"
SPEC_HASH = "wno_spec_hash"
KIND = "wno_kind"
STUDY_UID = "wno_study_uid"
PARAM_SPACE = "wno_param_space"
DEFAULTS = "wno_defaults"

CONFIG = "wno_config"
CONFIG_HASH = "wno_config_hash"
ROLE = "wno_role"
FACTORS = "wno_factors"
GROUP = "wno_group"
SEED = "wno_seed"
METRICS = "wno_metrics"
MLFLOW_RUN = "wno_mlflow_run_id"
HOST = "wno_host"
DEVICE = "wno_device"
ERROR = "wno_error"
RETRY_OF = "wno_retry_of"
HEARTBEAT_INTERVAL = "wno_heartbeat_interval"

ROLE_MODEL = "model"
ROLE_BASELINE = "baseline"


def group_label(factors: dict) -> str:
    """The GROUP label of a configuration: its factors without the seed.

    >>> group_label({"use_kernel": True, "n_levels": 3})
    'use_kernel=True, n_levels=3'
    """
    return ", ".join(f"{k}={v}" for k, v in factors.items())


EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time",
                 "images_per_s")
FINAL_METRICS = ("final_val_acc", "best_val_acc", "best_epoch", "test_acc", "test_loss",
                 "params", "flops", "executed_flops", "tokens", "wall_time", "throughput",
                 "epochs_completed")
