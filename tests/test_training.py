"""wno.train_utils and wno.training: schedule, optimiser groups, train(), resume, checkpoints."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wno.platform import schema
from wno.train_utils import (CosineAnnealingWarmupRestarts, load_checkpoint, no_weight_decay,
                             param_groups, save_checkpoint)
from wno.training import Callback, EpochMetrics, TrainResult, train
from wno.training.loop import CheckpointMismatch


# ------------------------------------------------------------------------------------------------
# Schedule and optimiser groups
# ------------------------------------------------------------------------------------------------
def _sched(total=100, warmup=10, max_lr=1.0, min_lr=0.01):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    return opt, CosineAnnealingWarmupRestarts(opt, total, max_lr=max_lr, min_lr=min_lr,
                                              warmup_steps=warmup)


def test_schedule_warms_up_linearly_then_follows_a_cosine():
    opt, sched = _sched()
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.01 + 0.99 * 0.5)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5)  # half way down the cosine
    assert lrs[99] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * 89 / 90)) / 2)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone after the peak


def test_schedule_state_dict_resumes_exactly():
    opt, sched = _sched()
    for _ in range(37):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2, sched2 = _sched()
    sched2.load_state_dict(state)
    for _ in range(20):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()


def test_schedule_refuses_impossible_warmup():
    with pytest.raises(ValueError, match="warmup_steps=100"):
        _sched(total=100, warmup=100)


def _groups(config):
    from wno.model import build_model

    model = build_model(config)
    decay, exempt = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    return ({names[id(p)] for p in decay["params"]}, {names[id(p)] for p in exempt["params"]},
            decay, exempt, model)


def test_vit_groups_exempt_norms_biases_tokens_and_positions(make_config):
    decayed, exempt, g_decay, g_exempt, model = _groups(make_config(model="vit"))
    assert g_decay["weight_decay"] == 0.05 and g_exempt["weight_decay"] == 0.0
    assert "pos_embed" in exempt  # the ViT twin has no class token
    assert not any(n.endswith("bias") or "norm" in n for n in decayed)
    assert "patch_embed.weight" in decayed and "head.weight" in decayed
    assert any(n.endswith("attn.qkv.weight") for n in decayed)
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


def test_wavelet_groups_exempt_positional_encodings_and_kernel(make_config):
    decayed, exempt, *_ = _groups(make_config(model="wavelet", token_layout="patch"))
    assert any(n.startswith("pos_encoding.") for n in exempt)
    assert not any(n.startswith(("pos_encoding.", "kernel_attention.")) for n in decayed)
    assert "tokenizer.proj_bias" in exempt and "head.weight" in decayed


def test_no_weight_decay_rule():
    w2 = torch.nn.Parameter(torch.zeros(3, 3))
    assert no_weight_decay("blocks.0.norm1.weight", torch.nn.Parameter(torch.zeros(3)))
    assert no_weight_decay("table.weight", w2, torch.nn.Embedding(3, 3))
    assert no_weight_decay("encoder.pos_embedding", w2)
    assert not no_weight_decay("patch_embed.proj.weight", w2)
    assert not no_weight_decay("blocks.0.mlp.fc1.weight", w2)


# ------------------------------------------------------------------------------------------------
# train()
# ------------------------------------------------------------------------------------------------
class Recorder(Callback):
    """Records every hook; can stop after an epoch or after some steps of an epoch."""

    def __init__(self, stop_after_epoch=None, stop_at_step=None):
        self.events, self.steps, self.polls = [], 0, 0
        self.stop_after_epoch, self.stop_at_step = stop_after_epoch, stop_at_step
        self.info = self.result = None

    def on_train_start(self, info):
        self.info = info
        self.events.append(("start", info.start_epoch))

    def on_step(self, p):
        self.steps += 1

    def should_stop_now(self):
        self.polls += 1
        return self.stop_at_step is not None and self.polls > self.stop_at_step

    def on_epoch_end(self, m):
        self.events.append(("epoch", m.epoch))
        return self.stop_after_epoch is not None and m.epoch >= self.stop_after_epoch

    def on_train_end(self, result):
        self.result = result
        self.events.append(("end", result.epochs_completed))


@pytest.mark.slow
def test_synthetic_is_learned_to_high_accuracy(make_config):
    config = make_config(epochs=4, train_size=2000)
    rec = Recorder()
    result = train(config, [rec])
    assert result.best_val_acc >= 0.9 and result.test_acc >= 0.85, result.history
    assert result.history[0].val_acc < result.best_val_acc  # it learned, not read off the start
    assert rec.events == [("start", 0), ("epoch", 1), ("epoch", 2), ("epoch", 3), ("epoch", 4),
                          ("end", 4)]
    assert rec.steps == 4 * (2000 // 64) and rec.info.steps_per_epoch == 2000 // 64
    assert (rec.info.train_images, rec.info.val_images, rec.info.test_images) == (2000, 500, 500)
    assert rec.info.params == result.params > 0 and result.flops > 0 and result.tokens == 64
    assert result.executed_flops == result.flops  # a ViT computes every pair it needs
    assert rec.result is result and not result.stopped
    assert set(result.metrics()) == set(schema.FINAL_METRICS)
    assert set(result.history[0].to_dict()) == {"epoch", *schema.EPOCH_METRICS}
    assert result.best_epoch == max(range(1, 5), key=lambda e: result.history[e - 1].val_acc)
    assert result.throughput > 0 and result.wall_time > sum(m.epoch_time for m in result.history) * 0.9
    # files next to each other: last.pt, best.pt, metrics.json
    save = Path(config.save_dir)
    last, best = load_checkpoint(save / "last.pt"), load_checkpoint(save / "best.pt")
    assert last["epoch"] == 4 and best["epoch"] == result.best_epoch
    assert last["config_hash"] == config.config_hash() and len(last["history"]) == 4
    doc = json.loads((save / "metrics.json").read_text())
    assert doc["status"] == "finished" and doc["final"]["test_acc"] == result.test_acc
    assert [h["val_acc"] for h in doc["history"]] == [m.val_acc for m in result.history]
    # best.pt holds the weights that scored best_val_acc on the validation split
    from wno.training.data import load_data
    from wno.model import build_model
    from wno.train_utils import validate

    model = build_model(config)
    model.load_state_dict(best["model"])
    val = validate(model, load_data(config).loader("val", batch_size=256),
                   torch.nn.CrossEntropyLoss(), "cpu")
    assert val.acc == pytest.approx(result.best_val_acc)


def _weights(save_dir):
    return load_checkpoint(Path(save_dir) / "last.pt")["model"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit", "wavelet"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(make_config, tmp_path, model):
    # Every source of randomness is on: dropout / stochastic depth, RandAugment, MixUp, CutMix.
    extra = dict(dropout=0.1, augment="randaugment", mixup_alpha=0.4, cutmix_alpha=0.6)
    if model == "wavelet":
        extra |= dict(model="wavelet", token_layout="patch", token_patch=4, drop_path=0.2,
                      train_size=256, batch_size=32)
    else:
        extra |= dict(train_size=384)
    whole = make_config(epochs=3, save_dir=str(tmp_path / "whole"), **extra)
    parts = make_config(epochs=3, save_dir=str(tmp_path / "parts"), **extra)
    assert whole.config_hash() == parts.config_hash()
    full = train(whole)

    first = train(parts, [Recorder(stop_after_epoch=1)])  # e.g. pruned / preempted after epoch 1
    assert first.stopped and first.epochs_completed == 1 and first.test_acc is None
    mid = Recorder(stop_at_step=3)  # a signal in the middle of epoch 2: the epoch is abandoned
    second = train(parts, [mid])
    assert second.stopped and second.epochs_completed == 1 and mid.events[0] == ("start", 1)
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 1
    rec = Recorder()
    resumed = train(parts, [rec])
    assert rec.events[0] == ("start", 1) and rec.info.history[0].epoch == 1
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    strip = lambda h: [(m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.lr) for m in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    assert resumed.test_acc == full.test_acc and resumed.best_epoch == full.best_epoch


@pytest.mark.slow
def test_finished_run_is_not_trained_again(make_config):
    config = make_config(epochs=1, train_size=256)
    first = train(config)
    mtime = (Path(config.save_dir) / "last.pt").stat().st_mtime_ns
    rec = Recorder()
    again = train(config, [rec])
    assert rec.steps == 0 and rec.events[0] == ("start", 1)
    assert again.test_acc == first.test_acc and again.epochs_completed == 1
    assert (Path(config.save_dir) / "last.pt").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_a_different_configuration_is_refused_and_its_checkpoint_kept(make_config):
    config = make_config(epochs=1, train_size=256)
    train(config)
    last = Path(config.save_dir) / "last.pt"
    before = last.read_bytes()
    for changed, resume in ((config.replace(lr=1e-4), True), (config.replace(epochs=2), False)):
        with pytest.raises(CheckpointMismatch, match=r"different configuration.*(lr|epochs)"):
            train(changed, resume=resume)
        assert last.read_bytes() == before
    # machine fields are not part of the identity: another data dir resumes the same run
    rec = Recorder()
    train(config.replace(data_dir="/elsewhere"), [rec])
    assert rec.events[0] == ("start", 1)


@pytest.mark.slow
def test_no_resume_starts_afresh(make_config):
    config = make_config(epochs=1, train_size=256)
    train(config)
    rec = Recorder()
    train(config, [rec], resume=False)
    assert rec.events[0] == ("start", 0) and rec.steps > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit", "wavelet"])
def test_bf16_autocast_trains(make_config, model):
    extra = dict(token_layout="patch", token_patch=4) if model == "wavelet" else {}
    result = train(make_config(model=model, precision="bf16", epochs=1, train_size=128,
                               val_size=64, test_size=64, batch_size=32, **extra))
    m = result.history[0]
    assert math.isfinite(m.train_loss) and math.isfinite(m.val_loss) and 0 <= m.val_acc <= 1


@pytest.mark.slow
def test_without_a_validation_split_best_is_the_latest_and_json_stays_valid(make_config):
    config = make_config(val_size=0, epochs=2, train_size=256)
    result = train(config)
    assert math.isnan(result.best_val_acc) and result.best_epoch == 2
    assert load_checkpoint(Path(config.save_dir) / "best.pt")["epoch"] == 2
    doc = json.loads((Path(config.save_dir) / "metrics.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert doc["history"][0]["val_acc"] is None and doc["final"]["test_acc"] == result.test_acc


def test_bad_config_fails_before_anything_is_written(make_config, tmp_path):
    from wno.training.config import ConfigError

    config = make_config(model="wavelet", wavelet="nosuchwavelet")
    with pytest.raises(ConfigError, match="nosuchwavelet"):
        train(config)
    with pytest.raises(ValueError, match="train_size=99999"):
        train(make_config(train_size=99_999))
    assert not Path(config.save_dir).exists()


def test_cuda_device_on_a_machine_without_one_is_a_clear_error(make_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        train(make_config(device="cuda"))


def test_epoch_metrics_names_match_the_platform_schema():
    m = EpochMetrics(1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert tuple(m.to_dict())[1:] == schema.EPOCH_METRICS
    r = TrainResult(None, 0.5, 0.6, 1, 0.55, 1.2, 1, 2, 3, 4.0, 5.0, 1)
    assert set(r.metrics()) == set(schema.FINAL_METRICS)


# ------------------------------------------------------------------------------------------------
# Checkpoint atomicity
# ------------------------------------------------------------------------------------------------
_WRITER = r"""
import sys, torch
from wno.train_utils import save_checkpoint
path, mode = sys.argv[1], sys.argv[2]
big = torch.full((40_000_000,), 2.0)  # 160 MB: a write takes a while
print("writing", flush=True)
while True:
    if mode == "atomic":
        save_checkpoint(path, {"epoch": 2, "model": {"w": big}})
    else:
        torch.save({"epoch": 2, "model": {"w": big}}, path)
"""


def _kill_during_write(tmp_path: Path, mode: str) -> Path:
    path = tmp_path / mode / "last.pt"
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.ones(10)}})
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), mode],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "writing"
        # wait until a write is under way (a temporary file, or the target being rewritten)
        deadline = time.time() + 60
        while time.time() < deadline:
            busy = [f for f in path.parent.iterdir() if f.name.endswith(".tmp")]
            if (mode == "atomic" and busy and busy[0].stat().st_size > 1_000_000) or (
                    mode == "plain" and 1_000_000 < path.stat().st_size < 100_000_000):
                break
            time.sleep(0.002)
        else:
            pytest.fail("the writer never got going")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return path


@pytest.mark.slow
def test_checkpoint_survives_a_kill_during_write(tmp_path):
    path = _kill_during_write(tmp_path, "atomic")
    ckpt = load_checkpoint(path)  # the old checkpoint, or a complete new one: never half of one
    assert ckpt["epoch"] in (1, 2)
    if ckpt["epoch"] == 2:
        assert ckpt["model"]["w"].numel() == 40_000_000
    # the killed writer's temporary file is what the next run clears away
    from wno.train_utils import remove_stale_temps

    assert remove_stale_temps(path.parent) >= 0
    assert [f.name for f in path.parent.iterdir()] == ["last.pt"]
    # the control: a plain torch.save killed the same way leaves a file that cannot be read,
    # so the test above really killed a writer mid-write
    plain = _kill_during_write(tmp_path, "plain")
    with pytest.raises(Exception):
        load_checkpoint(plain)


def test_checkpoints_load_with_weights_only(tmp_path):
    import random

    from wno.train_utils import rng_state, set_rng_state

    state = rng_state()
    save_checkpoint(tmp_path / "c.pt", {"rng": state, "history": [{"epoch": 1, "val_acc": 0.5}]})
    loaded = load_checkpoint(tmp_path / "c.pt")
    a = (torch.rand(3), random.random())
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), a[0]) and random.random() == a[1]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------
# Real CIFAR-10: clearly above chance (10%) on the held-out validation split, on a CPU budget
# ------------------------------------------------------------------------------------------------
CIFAR_BUDGET = {
    # a few thousand images and a few epochs; W-MSA uses 4x4 coefficient patches (84 tokens)
    "vit": dict(model="vit", train_size=4000, epochs=3, lr=2e-3, warmup_epochs=0.5),
    "wavelet": dict(model="wavelet", token_layout="patch", token_patch=4, train_size=3000,
                    epochs=3, lr=3e-3, warmup_epochs=0.3),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit", "wavelet"])
def test_micro_model_learns_real_cifar10(make_config, cifar10_dir, cifar10_splits, model):
    config = make_config(dataset="cifar10", data_dir=str(cifar10_dir), val_size=1000,
                         test_size=1000, batch_size=64, **CIFAR_BUDGET[model])
    result = train(config)
    # chance is 10% (+-1% at 1,000 images); 20% is ten standard deviations above it
    assert result.best_val_acc >= 0.2, [m.val_acc for m in result.history]
    assert result.test_acc >= 0.18
    assert result.history[-1].train_loss < result.history[0].train_loss


# ------------------------------------------------------------------------------------------------
# CPU allocator
# ------------------------------------------------------------------------------------------------
_KEEP_PROBE = """
import torch
from wno.base.utils import keep_freed_memory
on = keep_freed_memory()
page = 4096
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
before = rss()
x = torch.ones(128 * 2**20 // 4)  # 128 MB, every page touched
del x
print(on, (rss() - before) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("setting", ["", "system"])
def test_keep_freed_memory_keeps_large_blocks_for_reuse(setting):
    env = {**os.environ, "WNO_CPU_ALLOCATOR": setting}
    out = subprocess.run([sys.executable, "-c", _KEEP_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    on, kept_mb = out[0] == "True", int(out[1])
    if setting == "system":  # the escape hatch leaves glibc alone: the block goes back at once
        assert not on and kept_mb < 16
    else:  # the freed 128 MB stays mapped, ready for the next step's tensors
        assert on and kept_mb >= 100


def test_a_checkpoint_of_the_same_model_under_an_older_hash_resumes(tmp_path, make_config):
    """An older wno hashed a 1x1 patch apart from the seed layout; the checkpoint is the same
    model and is accepted. A checkpoint of another configuration still is not."""
    from wno.training.loop import check_same_config

    seed = make_config(model="wavelet", token_layout="seed")
    old = seed.replace(token_layout="patch", token_patch=1)
    ckpt = {"config": old.to_dict(), "config_hash": old.config_hash(canonical=False)}
    check_same_config(ckpt, seed, tmp_path / "last.pt")
    with pytest.raises(CheckpointMismatch, match="lr"):
        check_same_config(ckpt, seed.replace(lr=seed.lr * 2), tmp_path / "last.pt")



# ------------------------------------------------------------------------------------------------
# Which checkpoint resumes: lineage, weights that fit, the code that wrote it (issue 16)
# ------------------------------------------------------------------------------------------------
def _tiny(make_config, **changes):
    return make_config(epochs=1, train_size=64, val_size=32, test_size=32, batch_size=32,
                       **changes)


def _rewrite(path: Path, **changes) -> None:
    """Change a saved checkpoint in place (what another study, or older code, would have left)."""
    ckpt = load_checkpoint(path)
    ckpt.update(changes)
    save_checkpoint(path, ckpt)


def _aside(save_dir: Path) -> list[Path]:
    return sorted(save_dir.glob("ignored-*"))


def _warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wno.training"]


@pytest.mark.slow
def test_a_checkpoint_of_another_lineage_is_set_aside_and_the_run_starts_afresh(make_config,
                                                                                caplog):
    config = _tiny(make_config)
    save = Path(config.save_dir)
    train(config, lineage="study-a")
    first = load_checkpoint(save / "last.pt")
    assert first["lineage"] == "study-a"

    rec = Recorder()
    train(config, [rec], lineage="study-b")
    assert rec.events[0] == ("start", 0) and rec.steps > 0  # trained, not resumed
    (warning,) = _warned(caplog)
    assert f"checkpoint in {save} ignored" in warning and "study-a" in warning
    assert rec.info.warnings == [warning]
    (aside,) = _aside(save)  # nothing lost: the other study's files, moved
    assert str(aside) in warning and load_checkpoint(aside / "last.pt")["lineage"] == "study-a"
    assert {p.name for p in aside.iterdir()} == {"last.pt", "best.pt", "metrics.json"}
    second = load_checkpoint(save / "last.pt")
    assert second["lineage"] == "study-b"
    # from scratch means exactly a fresh run: the same weights as study-a's first epoch
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])

    caplog.clear()
    for lineage in ("study-b", None):  # its own lineage resumes; `wno train` names none
        rec = Recorder()
        train(config, [rec], lineage=lineage)
        assert rec.events[0] == ("start", 1) and rec.steps == 0 and not _warned(caplog)

    _rewrite(save / "last.pt", lineage=None)  # written before checkpoints carried a lineage
    rec = Recorder()
    train(config, [rec], lineage="study-b")
    assert rec.events[0] == ("start", 0) and "not recorded" in _warned(caplog)[0]
    assert len(_aside(save)) == 2


def test_a_checkpoint_of_another_configuration_is_refused_whatever_its_lineage(make_config):
    """The configuration check comes before the lineage: another configuration's files in the
    folder asked for are refused, not set aside and overwritten."""
    config = _tiny(make_config)
    save = Path(config.save_dir)
    save.mkdir(parents=True)
    other = config.replace(lr=config.lr * 2)
    save_checkpoint(save / "last.pt", {"config": other.to_dict(), "lineage": "study-a",
                                       "config_hash": other.config_hash()})
    for lineage in ("study-b", None):
        with pytest.raises(CheckpointMismatch, match="lr"):
            train(config, lineage=lineage)
    assert load_checkpoint(save / "last.pt")["lineage"] == "study-a" and not _aside(save)


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["renamed key", "shape"])
def test_a_checkpoint_whose_weights_do_not_fit_the_model_is_set_aside(make_config, caplog,
                                                                      tamper):
    """Old ViT checkpoints after the model's blocks were rebuilt: the trial trains from scratch
    with a warning naming the folder, instead of failing."""
    config = _tiny(make_config)
    save = Path(config.save_dir)
    train(config, lineage="study-a")
    original = load_checkpoint(save / "last.pt")["model"]
    weights = dict(original)
    name = next(k for k, v in weights.items() if v.ndim == 2)
    if tamper == "renamed key":
        weights[name.replace(".", ".old_", 1)] = weights.pop(name)
        expected = "missing keys"
    else:
        weights[name] = torch.zeros(weights[name].shape[0] + 1, weights[name].shape[1])
        expected = "shapes differ"
    _rewrite(save / "last.pt", model=weights)

    rec = Recorder()
    train(config, [rec], lineage="study-a")
    assert rec.events[0] == ("start", 0) and rec.steps > 0
    (warning,) = _warned(caplog)
    assert f"checkpoint in {save} ignored" in warning and "do not fit" in warning
    assert expected in warning and name in warning
    (aside,) = _aside(save)  # the tampered checkpoint, kept
    assert set(load_checkpoint(aside / "last.pt")["model"]) == set(weights)
    # nothing of the tampered checkpoint leaked into the fresh run
    retrained = load_checkpoint(save / "last.pt")["model"]
    assert all(torch.equal(original[k], retrained[k]) for k in original)


@pytest.mark.slow
def test_checkpoints_record_the_code_and_a_resume_by_other_code_says_so(make_config, caplog):
    from wno.base.code_version import code_version

    config = _tiny(make_config)
    save = Path(config.save_dir)
    train(config)
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(save / name)["code"] == code_version()
    train(config)
    assert not _warned(caplog)  # the same code: nothing to say

    _rewrite(save / "last.pt", code={"version": "0.0.1", "commit": "0123456789abcdef",
                                     "dirty": False})
    rec = Recorder()
    train(config, [rec])
    assert rec.events[0] == ("start", 1)  # still resumed
    (warning,) = _warned(caplog)
    assert "written by wno 0.0.1, commit 0123456789ab" in warning
    assert f"this is wno {code_version()['version']}" in warning


def test_code_version_reads_the_commit_an_image_was_built_from(monkeypatch):
    from wno.base import code_version as cv

    monkeypatch.setenv(cv.ENV_GIT_COMMIT, "feedfacecafe1234")
    cv.code_version.cache_clear()
    try:
        assert cv.code_version()["commit"] == "feedfacecafe1234"
    finally:
        cv.code_version.cache_clear()
    a = {"version": "0.1.0", "commit": "abc", "dirty": False}
    assert cv.same_code(a, {**a, "dirty": True}) and not cv.same_code(a, {**a, "commit": "abd"})
    assert not cv.same_code(None, a)
    assert cv.describe_code(None) == "a wno version that did not record itself"
