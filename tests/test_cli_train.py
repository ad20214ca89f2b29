"""`wno train`: flags, --config precedence, progress/summary, bad input (CliRunner and subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO
from wno.cli import app

# A tiny, fast run: micro ViT on the synthetic set.
SMALL = ["--dataset", "synthetic", "--model", "vit", "--model-size", "micro", "--train-size",
         "256", "--val-size", "128", "--test-size", "128", "--batch-size", "64", "--device", "cpu"]


def invoke(*args, env=None):
    return CliRunner().invoke(app, ["train", *map(str, args)], env=env)


def test_help_lists_every_seed_flag():
    out = invoke("--help").output
    for flag in ("--model-size", "--epochs", "--batch-size", "--lr", "--weight-decay",
                 "--warmup-epochs", "--wavelet", "--n-levels", "--use-kernel", "--no-use-kernel",
                 "--save-dir", "--data-dir", "--model", "--seed", "--device", "--resume",
                 "--no-resume", "--config", "--dataset", "--train-size", "--val-size",
                 "--precision", "--compile", "--mode", "--label-smoothing", "--grad-clip",
                 "--drop-path"):
        assert flag in out, flag


def test_help_shows_every_default_of_the_original_description():
    """Rich ate the hand-written "[default: N]"; every default must reach the screen."""
    out = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
                   .output.split())
    for flag, default in (("--model-size", "small"), ("--epochs", "100"), ("--batch-size", "128"),
                          ("--lr", "0.001"), ("--weight-decay", "0.05"),
                          ("--warmup-epochs", "5.0"), ("--wavelet", "db4"), ("--n-levels", "3"),
                          ("--label-smoothing", "0.1"), ("--grad-clip", "1.0"),
                          ("--drop-path", "0.1"), ("--mode", "boundary")):
        after = out[out.index(flag + " "):]
        assert f"[default: {default}]" in after[:600], (flag, after[:600])
    assert "beyond the original description" in out


@pytest.mark.slow
def test_train_writes_checkpoints_metrics_and_a_summary(tmp_path):
    save = tmp_path / "run"
    r = invoke(*SMALL, "--epochs", 2, "--save-dir", save)
    assert r.exit_code == 0, r.output
    assert "epoch   1/2" in r.output and "epoch   2/2" in r.output
    assert "summary" in r.output and "test acc" in r.output and "img/s" in r.output
    assert "label_smoothing 0.1, grad_clip 1.0, drop_path 0.1" in " ".join(r.output.split())
    assert {p.name for p in save.iterdir()} == {"last.pt", "best.pt", "metrics.json"}
    doc = json.loads((save / "metrics.json").read_text())
    assert doc["status"] == "finished" and len(doc["history"]) == 2
    assert doc["config"]["model"] == "vit" and doc["config"]["train_size"] == 256
    # the same command again resumes the finished run instead of training it twice
    again = invoke(*SMALL, "--epochs", 2, "--save-dir", save)
    assert again.exit_code == 0 and "resuming after epoch 2/2" in again.output


@pytest.mark.slow
def test_config_file_with_flags_overriding_it(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": "vit", "model_size": "micro", "dataset": "synthetic",
                                   "train_size": 256, "val_size": 128, "test_size": 128,
                                   "epochs": 3, "lr": 0.0042, "device": "cpu",
                                   "save_dir": str(tmp_path / "from-yaml")}))
    r = invoke("--config", cfg, "--epochs", 1, "--set", "mixup_alpha=0.2")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "from-yaml" / "metrics.json").read_text())
    assert doc["config"]["epochs"] == 1  # the flag wins
    assert doc["config"]["lr"] == 0.0042 and doc["config"]["mixup_alpha"] == 0.2  # YAML / --set kept


@pytest.mark.slow
def test_default_save_dir_is_named_after_the_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(*SMALL, "--epochs", 1)
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "checkpoints").iterdir()
    doc = json.loads((run / "metrics.json").read_text())
    assert run.name == f"vit-micro-{doc['config_hash']}"


def _nothing_written(tmp_path):
    return not (tmp_path / "save").exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "imagenet"], "dataset='imagenet' is not one of cifar10, synthetic"),
    (["--model", "resnet"], "model='resnet' is not one of wavelet, vit"),
    (["--model", "wavelet", "--wavelet", "nosuch"], "nosuch"),
    (["--model", "wavelet", "--wavelet", "db4", "--n-levels", "4"], "db4"),
    (["--model", "vit", "--wavelet", "db4"], "--wavelet only applies to --model wavelet"),
    (["--val-size", "60000"], "val_size=60000"),
    (["--val-size", "5000"], "(e.g. val_size=1000: --val-size 1000)"),  # synthetic has 5,000
    (["--train-size", "4900", "--val-size", "500"], "train_size=4900 is larger"),
    (["--epochs", "0"], "epochs=0 must be >= 1"),
    (["--precision", "fp16"], "precision='fp16' is not one of auto, fp32, bf16"),
    (["--set", "no_such_field=1"], "unknown field 'no_such_field'"),
    (["--set", "lr"], "must look like KEY=VALUE"),
    (["--config", "/nonexistent/run.yaml"], "does not exist"),
])
def test_bad_input_is_a_clear_message_and_nothing_is_written(tmp_path, args, message):
    base = ["--dataset", "synthetic", "--model", "vit", "--model-size", "micro", "--device", "cpu"]
    r = invoke(*base, *args, "--save-dir", tmp_path / "save")
    assert r.exit_code == 2, r.output
    assert message in r.output, r.output
    assert "Traceback" not in r.output
    assert _nothing_written(tmp_path)


def test_missing_data_says_where_to_put_it(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    r = invoke("--model", "vit", "--model-size", "micro", "--data-dir", empty, "--device", "cpu",
               "--save-dir", tmp_path / "save", env={"WNO_OFFLINE": "1"})
    assert r.exit_code == 3, r.output
    assert str(empty) in r.output and "cifar10-jpeg.zip" in r.output and "--data-dir" in r.output
    assert _nothing_written(tmp_path) and os.listdir(empty) == []


def test_corrupt_data_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar10-jpeg.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    r = invoke("--model", "vit", "--model-size", "micro", "--data-dir", data, "--device", "cpu",
               "--save-dir", tmp_path / "save")
    assert r.exit_code == 2, r.output
    assert "cifar10-jpeg.zip is not a readable zip" in r.output and _nothing_written(tmp_path)


def test_cuda_on_a_cpu_machine(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = invoke(*SMALL[:-2], "--device", "cuda", "--save-dir", tmp_path / "save")
    assert r.exit_code == 2 and "no CUDA device" in r.output and _nothing_written(tmp_path)


@pytest.mark.slow
def test_another_configuration_in_the_same_save_dir_is_refused(tmp_path):
    save = tmp_path / "run"
    assert invoke(*SMALL, "--epochs", 1, "--save-dir", save).exit_code == 0
    before = (save / "last.pt").read_bytes()
    r = invoke(*SMALL, "--epochs", 1, "--lr", "0.01", "--save-dir", save)
    assert r.exit_code == 2 and "different configuration" in r.output and "lr" in r.output
    assert (save / "last.pt").read_bytes() == before


# ------------------------------------------------------------------------------------------------
# The real command in a subprocess
# ------------------------------------------------------------------------------------------------
def _run(cmd, **kw):
    env = {**os.environ, "WNO_OFFLINE": "1", **kw.pop("env", {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=kw.pop("cwd", REPO),
                          timeout=600, **kw)


def test_subprocess_bad_input_exits_non_zero_with_a_message(wno_cmd, tmp_path):
    p = _run([*wno_cmd, "train", "--dataset", "mnist", "--save-dir", str(tmp_path / "save")])
    assert p.returncode == 2
    assert "dataset='mnist' is not one of cifar10, synthetic" in p.stderr
    assert "Traceback" not in p.stderr and _nothing_written(tmp_path)


@pytest.mark.slow
def test_subprocess_interrupt_keeps_the_checkpoint_and_the_same_command_resumes(wno_cmd, tmp_path):
    save = tmp_path / "run"
    cmd = [*wno_cmd, "train", *SMALL, "--epochs", "30", "--save-dir", str(save)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "WNO_OFFLINE": "1"})
    try:
        deadline = time.time() + 300
        while not (save / "metrics.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (save / "metrics.json").exists(), "no epoch finished in time"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stop at the next step, keep last.pt
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "run the same command to resume" in out
    done = json.loads((save / "metrics.json").read_text())
    assert done["status"] == "stopped" and len(done["history"]) >= 1
    k = len(done["history"])
    # the same command resumes after epoch k; stop it again (SIGTERM) once it finished one more
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "WNO_OFFLINE": "1"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            hist = json.loads((save / "metrics.json").read_text())["history"]
            if len(hist) > k:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert f"resuming after epoch {k}/30" in out, out + err
    assert proc.returncode == 130


def test_progress_bar_on_a_terminal_shows_loss_accuracy_and_speed(tmp_path):
    import io

    from rich.console import Console

    from wno.cli.train import ConsoleProgress
    from wno.training.config import TrainConfig
    from wno.training import EpochMetrics, RunInfo, StepProgress, TrainResult

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150, highlight=False)
    cb = ConsoleProgress(console)
    config = TrainConfig(model="vit", model_size="micro", epochs=2)
    cb.on_train_start(RunInfo(config, 1000, 2_000_000, 65, "cpu", 1, tmp_path, [], 900, 100, 50,
                              10, "generated"))
    seen = []
    for step in range(1, 11):
        cb.on_step(StepProgress(2, step, 10, 64 * step, 1.5 if step % 5 == 0 else None,
                                0.25 if step % 5 == 0 else None))
        seen.append(cb.progress.tasks[0].completed)
    assert seen == list(range(1, 11))
    assert cb.progress.tasks[0].fields["loss"] == "1.5000"
    assert cb.progress.tasks[0].fields["acc"] == "25.00%"
    assert cb.progress.tasks[0].fields["ips"] != "-"
    metrics = EpochMetrics(2, 1.5, 0.25, 1.4, 0.3, 1e-3, 3.0, 200.0)
    cb.on_epoch_end(metrics)
    assert cb.progress is None
    cb.on_train_end(TrainResult(config, 0.3, 0.3, 2, 0.28, 1.5, 1000, 2_000_000, 65, 9.0, 200.0,
                                2, history=[metrics]))
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "resuming after epoch 1/2" in text and "epoch   2/2" in text and "30.00%" in text
    assert "28.00%" in text and "metrics.json" in text
