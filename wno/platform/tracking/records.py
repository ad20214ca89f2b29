"""What a run records and where it goes: params, tags, the resolved config, the environment, and
the `RunTarget` (experiment, identity tags) of a worker's trial or of a `wno train` run.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wno.base.code_version import code_version
from wno.base.utils import mask_secrets, mask_url
from wno.platform import defaults, schema
from wno.training.config import TrainConfig

TAG = "wno."  # prefix of every tag we set
TRAIN_EXPERIMENT = "wno-train"  # the experiment of `wno train` runs
PACKAGES = ("wno", "torch", "torchvision", "ptwt", "PyWavelets", "numpy", "optuna", "mlflow",
            "SQLAlchemy", "psycopg", "pandas", "scipy", "pydantic", "psutil", "nvidia-ml-py")


def run_params(config: TrainConfig) -> dict[str, str]:
    """MLflow params: every TrainConfig field except the machine ones, as strings (masked)."""
    return {k: mask_secrets(str(v)) for k, v in config.to_dict(machine=False).items()}


def machine_tags(config: TrainConfig) -> dict[str, str]:
    return {f"{TAG}{k}": mask_secrets(str(getattr(config, k)))
            for k in sorted(TrainConfig.machine_fields())}


def describe(config: TrainConfig) -> str:
    """A readable run name for a configuration, e.g. 'wavelet micro, haar x3, kernel on, seed=0'."""
    if config.model == "vit":
        what = f"vit {config.model_size}, patch {config.patch_size}"
    else:
        what = (f"wavelet {config.model_size}, {config.wavelet} x{config.n_levels}, kernel "
                f"{'on' if config.use_kernel else 'off'}, {config.token_layout} tokens")
    return f"{what}, seed={config.seed}"


def config_yaml(config: TrainConfig) -> str:
    """The resolved configuration (machine fields included), secrets masked."""
    import yaml

    data = {k: mask_secrets(v) if isinstance(v, str) else v for k, v in config.to_dict().items()}
    return (f"# config hash {config.config_hash()} (machine fields excluded from it)\n"
            + yaml.safe_dump(data, sort_keys=False))


def git_info() -> dict[str, Any] | None:
    """{'commit': sha, 'dirty': bool} of the code running (`wno.base.code_version`: the checkout,
    or $WNO_GIT_COMMIT in images built without .git), or None when unknown."""
    info = code_version()
    return {"commit": info["commit"], "dirty": info["dirty"]} if info["commit"] else None


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Python, platform, package versions, git commit and accelerator: what reproduces a run.
    No environment variables (they may hold credentials)."""
    import platform
    from importlib import metadata

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "host": socket.gethostname(), "packages": packages, "git": git_info(),
                           "device": device}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = {"cuda": torch.version.cuda, "threads": torch.get_num_threads()}
        if device and device.startswith("cuda") and torch.cuda.is_available():
            env["torch"]["gpu"] = torch.cuda.get_device_name(torch.device(device))
            env["torch"]["cudnn"] = torch.backends.cudnn.version()
    return env


# --- where a run goes ------------------------------------------------------------------------------
@dataclass
class RunTarget:
    """Which MLflow run a training belongs to, and what to tag it with."""

    tracking_uri: str
    experiment: str
    run_name: str
    config: TrainConfig
    tags: dict[str, str]  # set on every attempt (later attempts overwrite)
    identity: dict[str, str]  # tags that find the run again (e.g. study and config hash)
    run_id: str | None = None  # a run to continue (e.g. the trial's schema.MLFLOW_RUN)
    find: bool = True  # look for an existing run by `identity` when `run_id` does not do
    experiment_tags: dict[str, str] = field(default_factory=dict)
    trial_number: int | None = None  # appended to the run's `wno.trial_numbers`


def trial_target(*, study: str, number: int, trial_id: int, attrs: dict[str, Any],
                 config: TrainConfig, storage_url: str, host: str, device: str,
                 retry_history: Iterable[int] = (), tracking_uri: str | None = None,
                 description: str = "", study_uid: str = "") -> RunTarget:
    """The run of an Optuna trial: experiment = study, identity = (study, its id in the storage,
    config hash), so a study created again under the same name starts its own runs."""
    config_hash = attrs.get(schema.CONFIG_HASH) or config.config_hash()
    seed = attrs.get(schema.SEED, config.seed)
    group = attrs.get(schema.GROUP) or describe(config).rsplit(", seed=", 1)[0]
    tags = {
        f"{TAG}study": study, f"{TAG}trial_number": str(number), f"{TAG}trial_id": str(trial_id),
        f"{TAG}config_hash": config_hash, f"{TAG}seed": str(seed), f"{TAG}group": group,
        f"{TAG}role": str(attrs.get(schema.ROLE, "")),
        f"{TAG}factors": json.dumps(attrs.get(schema.FACTORS, {}), sort_keys=True, default=str),
        f"{TAG}storage": mask_url(storage_url), f"{TAG}host": host, f"{TAG}device_label": device,
        f"{TAG}retry_of": str(attrs.get(schema.RETRY_OF, "")),
        f"{TAG}retry_history": ",".join(str(n) for n in retry_history),
        f"{TAG}source": "worker", "mlflow.source.name": "wno worker", "mlflow.source.type": "JOB",
    }
    identity = {f"{TAG}study": study, f"{TAG}config_hash": config_hash}
    if study_uid:
        tags[f"{TAG}study_uid"] = identity[f"{TAG}study_uid"] = study_uid
    exp_tags = {f"{TAG}study": study, f"{TAG}storage": mask_url(storage_url)}
    if description:
        exp_tags["mlflow.note.content"] = description
    return RunTarget(
        tracking_uri=defaults.tracking_uri(tracking_uri), experiment=study,
        run_name=mask_secrets(f"{group}, seed={seed}"), config=config,
        tags={k: mask_secrets(v) for k, v in tags.items()},
        identity=identity, run_id=attrs.get(schema.MLFLOW_RUN), trial_number=number,
        experiment_tags={k: mask_secrets(v) for k, v in exp_tags.items()})


def train_target(config: TrainConfig, *, tracking_uri: str | None = None,
                 experiment: str | None = None, resume: bool = True) -> RunTarget:
    """The run of a `wno train` run: identity = (config hash, checkpoint folder), so running the
    same command again continues it; `resume=False` starts a new run."""
    save_dir = str(Path(config.save_dir).resolve())
    tags = {f"{TAG}config_hash": config.config_hash(), f"{TAG}seed": str(config.seed),
            f"{TAG}checkpoint_dir": save_dir, f"{TAG}source": "train",
            f"{TAG}host": socket.gethostname(), "mlflow.source.name": "wno train",
            "mlflow.source.type": "LOCAL"}
    return RunTarget(
        tracking_uri=defaults.tracking_uri(tracking_uri), experiment=experiment or TRAIN_EXPERIMENT,
        run_name=describe(config), config=config,
        tags={k: mask_secrets(v) for k, v in tags.items()},
        identity={f"{TAG}config_hash": config.config_hash(), f"{TAG}checkpoint_dir": save_dir},
        find=resume)




def dataset_input(info):
    """The data set a run trained on, as an MLflow dataset input (the UI's Dataset column).

    `info` is the training's `RunInfo`. Its digest identifies the images: the data set, its split
    sizes and the fixed split seed that draws every subset (`wno.training.data.SPLIT_SEED`), so
    two runs on different subsets show different digests and runs on the same images the same.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from wno.training.data import SPLIT_SEED

    c = info.config
    profile = {"train": info.train_images, "val": info.val_images, "test": info.test_images,
               "split_seed": SPLIT_SEED, "train_size": c.train_size, "val_size": c.val_size,
               "test_size": c.test_size}
    digest = hashlib.sha256(json.dumps({"dataset": c.dataset, **profile},
                                       sort_keys=True).encode()).hexdigest()[:8]
    source = info.data_source or c.dataset
    dataset = Dataset(name=c.dataset, digest=digest, source_type="local",
                      source=json.dumps({"uri": mask_secrets(source)}),
                      schema=json.dumps({"images": "uint8 (N, C, H, W)", "labels": "int64 (N,)"}),
                      profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])
