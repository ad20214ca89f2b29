"""MLflow tracking: one experiment per study, one run per configuration and seed.

One concern per module:

    records   what a run records (params, tags, config, environment) and where it goes (RunTarget)
    store     store and client access: quiet MLflow, local stores, experiments, finding runs
    sender    the background thread every MLflow call goes through (retries, drain at exit)
    tracker   MlflowTracker, the training callback, and the trackers of `wno train` and a worker
    history   reading runs back for the report (metric histories, run links)
    server    the `mlflow server` process of `wno ui` and the tests

The worker wires tracking in explicitly: `Worker(queue, options, callbacks_factory=trial_callbacks)`
(see `wno.cli.worker`).
"""

from wno.platform.tracking.records import (PACKAGES, TAG, TRAIN_EXPERIMENT, RunTarget,
                                           config_yaml, describe, environment_info, git_info,
                                           machine_tags, run_params, train_target, trial_target)
from wno.platform.tracking.server import (server_env, server_health, start_server, stop_server,
                                          wait_healthy)
from wno.platform.tracking.store import (KIND_TAG, KIND_TRAINING, artifact_root, client_for,
                                         ensure_experiment, epoch_steps, experiment_url, find_run,
                                         prepare_store, quiet_mlflow, run_url)
from wno.platform.tracking.tracker import (CHECKPOINT_POLICIES, ENV_CHECKPOINTS, RUN_STATUS,
                                           MlflowTracker, checkpoint_policy, train_tracker,
                                           trial_callbacks, trial_tracker)

__all__ = ["CHECKPOINT_POLICIES", "ENV_CHECKPOINTS", "KIND_TAG", "KIND_TRAINING", "PACKAGES",
           "RUN_STATUS", "TAG", "TRAIN_EXPERIMENT", "MlflowTracker", "RunTarget", "artifact_root",
           "checkpoint_policy", "client_for", "config_yaml", "describe", "ensure_experiment",
           "environment_info", "epoch_steps", "experiment_url", "find_run", "git_info",
           "machine_tags", "prepare_store", "quiet_mlflow", "run_params", "run_url", "server_env",
           "server_health", "start_server", "stop_server", "train_target", "train_tracker",
           "trial_callbacks", "trial_target", "trial_tracker", "wait_healthy"]
