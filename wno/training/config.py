"""`TrainConfig`: one dataclass holding every knob of a training run, passed whole.

A configuration is a flat record of scalars, so it round-trips through a dict (MLflow params,
Optuna user attrs), through YAML, and has a stable hash: the identity of a configuration. Fields
that describe the machine a run happens on (device, data directory, checkpoint directory) are not
part of that identity, so one study runs unchanged on any machine.

Example:
    >>> cfg = TrainConfig(model_size="micro", epochs=2, wavelet="db2", n_levels=2).validate()
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from wno.base.datasets import DATASETS
from wno.base.errors import did_you_mean, short_repr
from wno.base.sizes import MODEL_SIZES
from wno.base.variants import AUGMENTATIONS, MODELS, PRECISIONS, TOKEN_LAYOUTS
from wno.base.variants import ATTENTION_PATHS as _PATHS

ATTENTION_PATHS = ("auto", *_PATHS)  # auto: chosen per device (wno.model.attention_paths)

_MACHINE = {"machine": True}
# Regularisation the original description does not list, on by default: shown in `wno train
# --help`, the run summary and the README, so nobody mistakes it for the description's recipe.
REGULARISATION = ("label_smoothing", "grad_clip", "drop_path")
# Fields each model kind does not read (see TrainConfig.canonical).
_IGNORED_BY = {
    "vit": ("wavelet", "n_levels", "mode", "token_layout", "token_patch", "use_kernel",
            "kernel_radius", "kernel_scale_bandwidth", "attention"),
    "wavelet": ("patch_size",),
}
# Defaults of earlier versions, newest first, where they differ from today's. Studies stored
# before they recorded their defaults are read under the set that reproduces their trials
# (wno.platform.spec.resolve_stored).
EARLIER_DEFAULTS: tuple[dict[str, Any], ...] = (
    {"model_size": "tiny", "wavelet": "haar", "epochs": 10, "warmup_epochs": 1.0},
)
# Fields a W-MSA model reads only with the kernel on.
_KERNEL_ONLY = ("kernel_radius", "kernel_scale_bandwidth", "attention")


@functools.cache
def _defaults() -> dict[str, Any]:  # canonical() and config_hash() read it per trial planned
    return TrainConfig().to_dict(machine=False)


class ConfigError(ValueError):
    """A configuration that cannot run; `problems` lists every reason, each naming its field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


@dataclass
class TrainConfig:
    """Every knob of one training run. `None` on a model dimension means "from `model_size`".

    The defaults are the original description's argument table (small, db4, 3 levels, 100
    epochs, batch 128, lr 1e-3, weight decay 0.05, warmup 5 epochs). Regularisation beyond it is
    on by default and listed in `REGULARISATION`: label smoothing 0.1, gradient clipping at norm
    1.0, stochastic depth 0.1 (both W-MSA and its ViT twin).
    """

    # --- model -------------------------------------------------------------------------------
    model: str = "wavelet"  # "wavelet" (W-MSA Wavelet Transformer) or "vit" (baseline)
    model_size: str = "small"  # a key of MODEL_SIZES (wno.base.sizes)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    drop_path: float = 0.1  # stochastic depth rate of the last block (linear ramp)
    dropout: float = 0.0
    # --- wavelet front end (model="wavelet") ---------------------------------------------------
    wavelet: str = "db4"
    n_levels: int = 3
    mode: str = "boundary"  # boundary or periodization (exact halving), or a ptwt padding mode
    token_layout: str = "seed"  # seed: a token per coefficient; patch / pool: p x p windows
    token_patch: int = 2  # p of the patch and pool layouts (read by those two only)
    # --- attention kernel (model="wavelet") ----------------------------------------------------
    use_kernel: bool = True
    kernel_radius: float = 0.25  # spatial support, in scale-normalised coordinates [0, 1]
    kernel_scale_bandwidth: int = 1  # largest |level - level'| that may attend
    attention: str = "auto"  # auto | dense | fused | sparse | flex (see wno.model.attention_paths)
    # --- ViT baseline (model="vit") ------------------------------------------------------------
    patch_size: int = 4
    # --- data ----------------------------------------------------------------------------------
    dataset: str = "cifar10"  # a key of DATASETS (wno.base.datasets)
    train_size: int | None = None  # subset of the training split (None: all of it)
    val_size: int = 5000  # held out of the training set, stratified, for selection and pruning
    test_size: int | None = None  # subset of the test set (None: all of it)
    augment: str = "standard"  # none | standard (crop + flip) | randaugment
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # --- optimisation --------------------------------------------------------------------------
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    # --- run -----------------------------------------------------------------------------------
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    # --- machine: where a run happens, not what it is (excluded from the hash) -----------------
    device: str = field(default="auto", metadata=_MACHINE)
    data_dir: str = field(default="data", metadata=_MACHINE)
    save_dir: str = field(default="checkpoints", metadata=_MACHINE)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def field_type(cls, name: str) -> type:
        """The scalar type of field `name` (int, float, str or bool), optional or not."""
        return _TYPES[cls.__annotations__[name].replace("| None", "").strip()]

    @classmethod
    def machine_fields(cls) -> set[str]:
        return {f.name for f in fields(cls) if f.metadata.get("machine")}

    def to_dict(self, *, machine: bool = True) -> dict[str, Any]:
        """Flat dict of every field (without the machine fields when `machine=False`)."""
        d = dataclasses.asdict(self)
        if not machine:
            for name in self.machine_fields():
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a flat dict, converting types; unknown keys are an error, not ignored."""
        unknown = sorted(set(data) - set(cls.field_names()))
        problems = [f"unknown field {k!r}{did_you_mean(k, cls.field_names())}" for k in unknown]
        kwargs = {}
        for f in fields(cls):
            if f.name in data:
                value, err = _coerce(f.name, data[f.name], f.type)
                if err:
                    problems.append(err)
                kwargs[f.name] = value
        if problems:
            raise ConfigError(problems)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of fields (`wno train --config`), under the bounds of
        `wno.base.safe_yaml` (no aliases, bounded size and nesting) and the same checks as any
        other source of values."""
        from wno.base.safe_yaml import YamlError, load_yaml, read_text

        try:
            data = load_yaml(read_text(path, "config file"))
        except FileNotFoundError:
            raise ConfigError([f"config file {str(path)!r} does not exist"]) from None
        except YamlError as e:
            raise ConfigError([f"config file {str(path)!r}: {e}"]) from None
        if not isinstance(data, dict):
            raise ConfigError([f"config file {str(path)!r} must hold a mapping of field: value"])
        return cls.from_dict(data)

    def canonical(self, defaults: dict[str, Any] | None = None) -> TrainConfig:
        """The same run with the fields its model kind ignores reset to their defaults, and values
        that build the same model written one way. `defaults` replaces the class defaults (a
        stored study is resolved under the defaults it was created with, see `defaults()`).

        A ViT does not read `wavelet` or `use_kernel`; without this, two identical ViT runs could
        carry different hashes and a study would train the same baseline twice. Likewise the seed
        token layout ignores `token_patch`, and 1 x 1 patches or pools are the seed layout.

        >>> TrainConfig(token_layout="pool", token_patch=1).canonical().token_layout
        'seed'
        """
        same = self
        if self.model == "wavelet" and self.token_patch == 1:  # 1 x 1 patches or pools: seed
            same = dataclasses.replace(self, token_layout="seed")
        reset = {**TrainConfig.defaults(), **(defaults or {})}
        return dataclasses.replace(same, **{n: reset[n] for n in same.ignored_fields()})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default (machine fields excluded): what a study records when it is
        stored, so that a later change of a default does not change the study's trials."""
        return dict(_defaults())

    def ignored_fields(self) -> tuple[str, ...]:
        """The fields this configuration's model does not read (`canonical` resets them).

        >>> TrainConfig(model="vit").ignored_fields()[:3]
        ('wavelet', 'n_levels', 'mode')
        """
        ignored = _IGNORED_BY.get(self.model, ())
        if self.model == "wavelet" and not self.use_kernel:
            ignored += _KERNEL_ONLY
        if self.model != "wavelet" or self.token_layout == "seed" or self.token_patch == 1:
            ignored += ("token_patch",)
        return tuple(dict.fromkeys(ignored))

    def config_hash(self, canonical: bool = True) -> str:
        """Stable identity of the configuration (machine fields excluded), 12 hex digits.

        `canonical=False` hashes the fields as they are: the hash a trial was enqueued with by a
        version whose `canonical()` merged less (the worker accepts either).
        """
        config = self.canonical() if canonical else self
        blob = json.dumps(config.to_dict(machine=False), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------------------------------
    def model_dims(self) -> tuple[int, int, int]:
        """(embed_dim, depth, num_heads) after applying overrides to the named size."""
        size = MODEL_SIZES[self.model_size]
        return (
            self.embed_dim if self.embed_dim is not None else size.embed_dim,
            self.depth if self.depth is not None else size.depth,
            self.num_heads if self.num_heads is not None else size.num_heads,
        )

    def num_tokens(self) -> int:
        """Tokens the model attends over, computed without building it (torch-free).

        >>> TrainConfig(wavelet="db4", n_levels=3).num_tokens(), TrainConfig(model="vit").num_tokens()
        (1329, 64)
        """
        from wno.base.wavelet_levels import token_count

        size = DATASETS[self.dataset].image_size
        if self.model == "vit":
            return (size // self.patch_size) ** 2
        return token_count(self.wavelet, self.n_levels, self.mode, size, self.token_layout,
                           self.token_patch)

    def problems(self) -> list[str]:
        """Every reason this configuration cannot run (empty when it can)."""
        from wno.base.wavelet_levels import check_wavelet_levels  # PyWavelets: only when asked

        p: list[str] = []
        _choice(p, "model", self.model, MODELS)
        _choice(p, "model_size", self.model_size, tuple(MODEL_SIZES))
        _choice(p, "token_layout", self.token_layout, TOKEN_LAYOUTS)
        _choice(p, "attention", self.attention, ATTENTION_PATHS)
        _choice(p, "augment", self.augment, AUGMENTATIONS)
        _choice(p, "precision", self.precision, PRECISIONS)
        _choice(p, "dataset", self.dataset, tuple(DATASETS))
        for name in ("epochs", "batch_size", "n_levels", "token_patch", "patch_size", "val_size"):
            if getattr(self, name) < (0 if name == "val_size" else 1):
                p.append(f"{name}={getattr(self, name)} must be >= {0 if name == 'val_size' else 1}")
        for name in ("embed_dim", "depth", "num_heads", "train_size", "test_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"{name}={v} must be >= 1 (or unset)")
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "label_smoothing",
                     "grad_clip", "mixup_alpha", "cutmix_alpha", "drop_path", "dropout"):
            if getattr(self, name) < 0:
                p.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.min_lr > self.lr:
            p.append(f"min_lr={self.min_lr} must not exceed lr={self.lr}")
        for name in ("drop_path", "dropout", "label_smoothing"):
            if getattr(self, name) >= 1:
                p.append(f"{name}={getattr(self, name)} must be < 1")
        if not 0 < self.kernel_radius <= 2:
            p.append(f"kernel_radius={self.kernel_radius} must be in (0, 2] (positions lie in [0, 1])")
        if self.kernel_scale_bandwidth < 0:
            p.append(f"kernel_scale_bandwidth={self.kernel_scale_bandwidth} must be >= 0")
        if self.model_size in MODEL_SIZES and not p:
            dim, depth, heads = self.model_dims()
            if dim % heads:
                p.append(f"num_heads={heads} does not divide embed_dim={dim}; "
                         f"allowed head counts for {dim}: {_divisors(dim)}")
        if self.model == "wavelet" and not p:
            image_size = DATASETS[self.dataset].image_size
            err = check_wavelet_levels(self.wavelet, self.n_levels, self.mode, image_size)
            if err:
                p.append(err)
        if self.dataset in DATASETS:
            _check_split_sizes(p, self, DATASETS[self.dataset])
        if self.model == "vit" and self.dataset in DATASETS:
            image_size = DATASETS[self.dataset].image_size
            if image_size % self.patch_size:
                p.append(f"patch_size={self.patch_size} does not divide the image size {image_size}")
        return p

    def validate(self) -> TrainConfig:
        """Raise `ConfigError` listing every problem; return self when the config can run."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


def _check_split_sizes(problems: list[str], cfg: TrainConfig, data) -> None:
    """The validation hold-out and the subsets must fit in the data set's splits."""
    if cfg.val_size >= data.train_images:
        problems.append(f"val_size={cfg.val_size} must be smaller than {data.name}'s "
                        f"{data.train_images:,} training images (e.g. val_size="
                        f"{data.train_images // 5}: --val-size {data.train_images // 5})")
    elif cfg.train_size is not None and cfg.train_size > data.train_images - cfg.val_size:
        problems.append(f"train_size={cfg.train_size} is larger than the "
                        f"{data.train_images - cfg.val_size:,} training images left after "
                        f"holding out val_size={cfg.val_size}")
    if cfg.test_size is not None and cfg.test_size > data.test_images:
        problems.append(f"test_size={cfg.test_size} is larger than {data.name}'s "
                        f"{data.test_images:,} test images")


def _choice(problems: list[str], name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        problems.append(f"{name}={value!r} is not one of {', '.join(map(str, allowed))}"
                        f"{did_you_mean(str(value), [str(a) for a in allowed])}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 32) + 1) if n % d == 0]


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


MAX_INT = 2**31 - 1  # what the training code's integers (epochs, sizes, steps) can hold
MAX_STR = 4096  # a path's limit on Linux; no name a field takes is longer


def _coerce(name: str, value: Any, annotation: str) -> tuple[Any, str | None]:
    """Convert `value` to the field's type; return (value, error message or None).

    Beyond the type: numbers must be finite (`.nan` or `inf` from YAML or the command line would
    train nothing sensible), integers at most MAX_INT in size, strings at most MAX_STR long.
    """
    optional = "None" in annotation
    base = annotation.replace("| None", "").strip()
    if value is None:
        return None, None if optional else f"{name} may not be empty (expected {base})"
    kind = _TYPES[base]
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "yes", "no"):
            return value.lower() in ("true", "on", "yes"), None
        return value, f"{name}={short_repr(value)} must be true or false"
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            return value, f"{name}={short_repr(value)} must be an integer"
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return value, f"{name}={short_repr(value)} must be an integer"
        if abs(number) > MAX_INT:
            return value, f"{name}={short_repr(value)} is too large: at most {MAX_INT:,}"
        return number, None
    if kind is float:
        if isinstance(value, bool):
            return value, f"{name}={short_repr(value)} must be a number"
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return value, f"{name}={short_repr(value)} must be a number"
        if not math.isfinite(number):
            return value, f"{name}={short_repr(value)} must be a finite number"
        return number, None
    if not isinstance(value, str):
        return value, f"{name}={short_repr(value)} must be a string"
    if len(value) > MAX_STR:
        return value, f"{name} is {len(value):,} characters long; at most {MAX_STR} are allowed"
    return value, None


