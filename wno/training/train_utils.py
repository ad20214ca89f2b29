"""The training loop's parts: one epoch, evaluation, the LR schedule, optimiser groups, checkpoints.

The seed's API is kept: `train_epoch(model, loader, criterion, optimizer, device, epoch)`,
`validate(model, loader, criterion, device)` and `CosineAnnealingWarmupRestarts(optimizer,
first_cycle_steps, max_lr, min_lr, warmup_steps)`; the extras (per-step scheduler, clipping,
autocast, a stop poll, progress) are keyword arguments with neutral defaults.

`wno.training.train` puts them together.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

from wno.base.utils import atomic_write_bytes


# ------------------------------------------------------------------------------------------------
# One epoch, evaluation
# ------------------------------------------------------------------------------------------------
@dataclass
class EpochStats:
    """What one pass over the training split measured. `stopped`: abandoned half-way."""

    loss: float
    acc: float
    images: int
    seconds: float
    stopped: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class EvalStats(NamedTuple):
    loss: float
    acc: float


def _autocast(device: torch.device | str, dtype: torch.dtype | None):
    device_type = torch.device(device).type
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def _correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of right answers; soft targets (MixUp/CutMix) count their largest class."""
    if target.ndim == 2:
        target = target.argmax(1)
    return (logits.argmax(1) == target).sum()


def train_epoch(model: nn.Module, loader: Iterable, criterion: nn.Module,
                optimizer: torch.optim.Optimizer, device: torch.device | str, epoch: int, *,
                scheduler: LRScheduler | None = None, grad_clip: float = 0.0,
                autocast_dtype: torch.dtype | None = None,
                should_stop: Callable[[], bool] | None = None,
                progress: Callable[[int, int, float | None, float | None], None] | None = None,
                log_every: int = 20) -> EpochStats:
    """Train `model` for one pass over `loader`; step `scheduler` after every optimiser step.

    Losses and accuracy accumulate on the device, so the loop does not wait on the accelerator
    except every `log_every` steps, when `progress(step, images, loss, acc)` gets running values
    (other steps it gets None for them). `should_stop()` is polled before every step; True
    abandons the epoch (`stopped=True`).
    """
    model.train()
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    images, stopped = 0, False
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        if should_stop is not None and should_stop():
            stopped = True
            break
        with _autocast(device, autocast_dtype):
            logits = model(x)  # (B, num_classes)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = x.shape[0]
        images += n
        loss_sum += loss.detach() * n
        correct += _correct(logits.detach(), y)
        if progress is not None:
            if step % log_every == 0:
                loss_total, n_correct = torch.stack([loss_sum, correct.float()]).tolist()  # 1 sync
                progress(step, images, loss_total / images, n_correct / images)
            else:
                progress(step, images, None, None)
    seconds = time.perf_counter() - start
    if images == 0:
        return EpochStats(float("nan"), float("nan"), 0, seconds, stopped)
    return EpochStats(loss_sum.item() / images, correct.item() / images, images, seconds, stopped)


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable, criterion: nn.Module,
             device: torch.device | str, *, autocast_dtype: torch.dtype | None = None) -> EvalStats:
    """Mean loss and accuracy of `model` over `loader` (NaN for an empty loader)."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    images = 0
    for x, y in loader:
        with _autocast(device, autocast_dtype):
            logits = model(x)
        loss_sum += criterion(logits.float(), y) * x.shape[0]
        correct += _correct(logits, y)
        images += x.shape[0]
    if images == 0:
        return EvalStats(float("nan"), float("nan"))
    return EvalStats(loss_sum.item() / images, correct.item() / images)


# ------------------------------------------------------------------------------------------------
# Schedule
# ------------------------------------------------------------------------------------------------
class CosineAnnealingWarmupRestarts(LRScheduler):
    """Linear warmup from `min_lr` to `max_lr`, then a cosine down to `min_lr`, per step.

    After `first_cycle_steps` the cycle restarts (length times `cycle_mult`, peak times `gamma`);
    `wno.training` uses one cycle over the whole run. The learning rate is a pure function of the
    step count, so `state_dict()` / `load_state_dict()` resume it exactly.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = CosineAnnealingWarmupRestarts(opt, 100, max_lr=1.0, min_lr=0.0, warmup_steps=10)
    >>> [round(g["lr"], 2) for g in opt.param_groups]
    [0.0]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, first_cycle_steps: int,
                 max_lr: float = 0.1, min_lr: float = 0.001, warmup_steps: int = 0,
                 cycle_mult: float = 1.0, gamma: float = 1.0, last_epoch: int = -1):
        if first_cycle_steps < 1:
            raise ValueError(f"first_cycle_steps={first_cycle_steps} must be >= 1")
        if not 0 <= warmup_steps < first_cycle_steps:
            raise ValueError(f"warmup_steps={warmup_steps} must be in [0, first_cycle_steps="
                             f"{first_cycle_steps})")
        self.first_cycle_steps, self.cycle_mult, self.gamma = first_cycle_steps, cycle_mult, gamma
        self.max_lr, self.min_lr, self.warmup_steps = max_lr, min_lr, warmup_steps
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> float:
        """The learning rate after `step` scheduler steps."""
        cycle_len, peak = self.first_cycle_steps, self.max_lr
        while step >= cycle_len:  # later cycles (never reached with one cycle per run)
            step -= cycle_len
            cycle_len = max(int(round(cycle_len * self.cycle_mult)), self.warmup_steps + 1)
            peak = self.min_lr + (peak - self.min_lr) * self.gamma
        if step < self.warmup_steps:
            return self.min_lr + (peak - self.min_lr) * step / self.warmup_steps
        t = (step - self.warmup_steps) / (cycle_len - self.warmup_steps)
        return self.min_lr + (peak - self.min_lr) * (1 + math.cos(math.pi * t)) / 2

    def get_lr(self) -> list[float]:
        return [self.lr_at(max(self.last_epoch, 0))] * len(self.optimizer.param_groups)


# ------------------------------------------------------------------------------------------------
# Optimiser
# ------------------------------------------------------------------------------------------------
_NO_DECAY_WORDS = {"pos", "position", "positional", "token", "bias", "kernel"}


def no_weight_decay(name: str, param: nn.Parameter, module: nn.Module | None = None) -> bool:
    """Whether a parameter is exempt from weight decay.

    The rule: parameters with ndim <= 1 (norm scales, biases, scalar kernel bandwidths); lookup
    tables (`nn.Embedding` weights); and any parameter with a dotted-name component whose
    `_`-separated words include pos / position / positional / token / bias / kernel: ViT's
    `class_token` and `pos_embedding`, the wavelet model's positional encodings, per-band biases
    such as `tokenizer.proj_bias`, and the attention kernel's shape parameters (a prior over
    scale/orientation/space, not a weight). Projections (patch embedding, qkv, MLP, head) keep
    their decay.
    """
    if param.ndim <= 1 or isinstance(module, nn.Embedding):
        return True
    return any(set(re.split(r"[_\d]+", part.lower())) & _NO_DECAY_WORDS for part in name.split("."))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights and the exempt ones (see `no_weight_decay`)."""
    owner = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    decay, exempt = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (exempt if no_weight_decay(name, p, owner.get(name)) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": exempt, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------------
# RNG state and checkpoints
# ------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global RNG the loop may draw from (torch CPU and CUDA, Python, NumPy)."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"],
                         n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """`random.setstate` wants tuples; a saved state may come back with lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` with `torch.save` atomically: readers see the old file or the new one."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def remove_stale_temps(folder: str | Path, names=("last.pt", "best.pt", "metrics.json")) -> int:
    """Delete temporary files a killed writer left behind (`.last.pt.<random>.tmp`); returns how
    many. Only call it where no other process writes the same run."""
    removed = 0
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain data only)."""
    return torch.load(path, map_location=map_location, weights_only=True)
