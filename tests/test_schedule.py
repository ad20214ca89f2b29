"""The learning rate `train()` really applies, step by step, in a short real run and after a resume.

`CosineAnnealingWarmupRestarts` has its own unit tests, but they cannot see how `train()` sets it
up (warmup counted in epochs instead of steps, a cycle longer than the run, the scheduler's state
lost on resume) or whether it is stepped per optimiser step at all. Here every optimiser step of a
real training is observed through torch's global step hook, and the rates are compared with the
schedule written out independently below, as `TrainConfig` documents it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import wno.training as training
from wno.training import Callback
from wno.training.config import TrainConfig

PEAK, FLOOR = 2e-3, 1e-4  # lr and min_lr: far enough apart that each point of the curve is distinct
EPOCHS, WARMUP_EPOCHS = 3, 1.5  # warmup ends mid-epoch: only a per-step warmup gets it right


def expected_lrs(total: int, warmup: int) -> list[float]:
    """The rate applied at steps 0..total-1: linear from min_lr up to lr over `warmup` steps,
    then half a cosine that would reach min_lr at step `total`, the end of the run."""
    out = []
    for step in range(total):
        if step < warmup:
            out.append(FLOOR + (PEAK - FLOOR) * step / warmup)
        else:
            t = (step - warmup) / (total - warmup)
            out.append(FLOOR + (PEAK - FLOOR) * (1 + math.cos(math.pi * t)) / 2)
    return out


class Steps(Callback):
    """Records the learning rate of every optimiser step `train` takes, and where epochs end."""

    def __init__(self):
        self.lrs: list[float] = []
        self.epoch_ends: list[int] = []
        self._hook = None

    def __enter__(self):
        def before_step(optimizer, args, kwargs):
            rates = {g["lr"] for g in optimizer.param_groups}
            assert len(rates) == 1, f"param groups with different rates: {rates}"
            self.lrs.append(rates.pop())

        self._hook = register_optimizer_step_pre_hook(before_step)
        return self

    def __exit__(self, *exc):
        self._hook.remove()

    def on_epoch_end(self, metrics):
        self.epoch_ends.append(len(self.lrs))


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, m):
        return m.epoch >= self.epoch


def config(tmp_path) -> TrainConfig:
    # 64 images in batches of 16: 4 steps an epoch, 12 in the run, warmup 1.5 epochs = 6 steps
    return TrainConfig(model="vit", model_size="micro", dataset="synthetic", train_size=64,
                       val_size=16, test_size=16, batch_size=16, epochs=EPOCHS, lr=PEAK,
                       min_lr=FLOOR, warmup_epochs=WARMUP_EPOCHS, device="cpu",
                       save_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"))


def steps_per_epoch(seen: Steps) -> int:
    per_epoch = {b - a for a, b in zip([0] + seen.epoch_ends, seen.epoch_ends)}
    assert len(per_epoch) == 1, f"epochs of different lengths: {seen.epoch_ends}"
    return per_epoch.pop()


@pytest.mark.slow
def test_a_run_applies_per_step_warmup_to_the_peak_then_cosine_to_min_lr(tmp_path):
    """Warmup lasts `warmup_epochs` x steps-per-epoch optimiser steps, starting at min_lr; the
    first step after it runs at exactly `lr`; the cosine then falls every step and would reach
    min_lr at the end of the run.

    Catches: warmup counted in epochs instead of steps, a scheduler stepped per epoch, a cycle
    longer or shorter than the run, a peak other than `lr`, a floor other than `min_lr`."""
    with Steps() as seen:
        training.train(config(tmp_path), [seen], resume=False)
    steps = steps_per_epoch(seen)
    total, warmup = steps * EPOCHS, round(WARMUP_EPOCHS * steps)
    assert (steps, total, warmup) == (4, 12, 6)
    assert seen.lrs == pytest.approx(expected_lrs(total, warmup), rel=1e-9, abs=0)
    # the same facts, read off the applied rates alone
    rising = [b > a for a, b in zip(seen.lrs, seen.lrs[1:])]
    assert rising == [True] * warmup + [False] * (total - warmup - 1)  # warmup steps, in steps
    assert seen.lrs[0] == pytest.approx(FLOOR) and max(seen.lrs) == pytest.approx(PEAK)
    assert seen.lrs.index(max(seen.lrs)) == warmup
    # the cosine lands on min_lr one step after the last one taken: extrapolate it
    last_gap = seen.lrs[-1] - FLOOR
    assert last_gap == pytest.approx((PEAK - FLOOR) * (1 - math.cos(math.pi / (total - warmup)))
                                     / 2, rel=1e-9)


@pytest.mark.slow
def test_a_run_resumed_mid_warmup_continues_the_schedule_where_it_stopped(tmp_path):
    """Stopped after epoch 1 (4 of 6 warmup steps) and resumed from its checkpoint, the run
    applies the rates the uninterrupted run applies at steps 4..11: warmup does not restart and
    the cosine still ends at min_lr at the end of the run.

    Catches: the scheduler's state not restored on resume (warmup starts again), or rebuilt
    for the epochs left instead of the whole run."""
    cfg = config(tmp_path)
    with Steps() as first:
        r1 = training.train(cfg, [first, StopAfterEpoch(1)], resume=True)
    assert r1.stopped and r1.epochs_completed == 1
    with Steps() as rest:
        r2 = training.train(cfg, [rest], resume=True)
    assert not r2.stopped and r2.epochs_completed == EPOCHS
    steps = steps_per_epoch(first)
    total, warmup = steps * EPOCHS, round(WARMUP_EPOCHS * steps)
    assert len(first.lrs) == steps < warmup  # stopped mid-warmup
    expected = expected_lrs(total, warmup)
    assert first.lrs == pytest.approx(expected[:steps], rel=1e-9, abs=0)
    assert rest.lrs == pytest.approx(expected[steps:], rel=1e-9, abs=0)
