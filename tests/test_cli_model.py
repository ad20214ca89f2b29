"""`wno compare` and `wno doctor`, through CliRunner and as real subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wno.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_compare_reports_three_models_and_draws_the_kernel(tmp_path):
    figure = tmp_path / "kernel.png"
    result = runner.invoke(app, ["compare", "--model-size", "micro", "--steps", "0", "--json",
                                 "--plot", str(figure)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    on, off, vit = data["rows"]
    assert (on["tokens"], off["tokens"], vit["tokens"]) == (1329, 1329, 64)
    assert on["attention_pairs"] < 0.2 * off["attention_pairs"]
    assert on["flops"] < off["flops"]
    # counted (the kernel's support) and executed (what this device's path computes) differ
    assert on["flops"] < on["executed_flops"] and off["flops"] == off["executed_flops"]
    assert on["path"] in ("fused", "sparse") and off["path"] == vit["path"] == "sdpa"
    assert on["params"] - off["params"] == 18  # the kernel's parameters
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_compare_draws_what_a_trained_checkpoints_tokens_carry(tmp_path):
    """The original description's feature visualization: a trained W-MSA checkpoint's feature
    norms per scale and orientation and its attention, beside its learned kernel."""
    from wno.training import TrainConfig, train

    cfg = TrainConfig(model_size="micro", wavelet="haar", token_layout="patch", token_patch=4,
                      dataset="synthetic", train_size=64, val_size=32, test_size=32, epochs=1,
                      batch_size=32, warmup_epochs=0, save_dir=str(tmp_path / "run"))
    train(cfg)
    plot = tmp_path / "figs" / "kernel.png"
    result = runner.invoke(app, ["compare", "--checkpoint", str(tmp_path / "run" / "last.pt"),
                                 "--steps", "0", "--json", "--plot", str(plot), "--image", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    features = Path(data["features"])
    assert features == plot.with_name("features.png") and plot.is_file()
    assert features.read_bytes()[:4] == b"\x89PNG" and features.stat().st_size > 20_000
    assert data["rows"][0]["config"]["token_patch"] == 4  # the checkpoint's configuration
    # The token maps themselves: one value per token, attention a distribution over tokens.
    from wno.training.compare import load_trained, test_image, token_maps

    model, config = load_trained(tmp_path / "run" / "last.pt")
    maps = token_maps(model, test_image(config, 5)[0])
    assert maps["norm"].shape == maps["attention"].shape == (model.num_tokens,)
    assert float(maps["attention"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(maps["attention"][maps["query"]]) > 0  # the kernel keeps a token's own pair
    # a ViT checkpoint, or a missing one, is a clear refusal
    vit = cfg.replace(model="vit", save_dir=str(tmp_path / "vit"))
    train(vit)
    refused = runner.invoke(app, ["compare", "--checkpoint", str(tmp_path / "vit" / "last.pt"),
                                  "--steps", "0", "--no-plot"])
    assert refused.exit_code == 2 and "holds a vit model" in refused.output
    missing = runner.invoke(app, ["compare", "--checkpoint", str(tmp_path / "none.pt")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    mixed = runner.invoke(app, ["compare", "--checkpoint", str(tmp_path / "run" / "last.pt"),
                                "--wavelet", "db4", "--steps", "0", "--no-plot"])
    assert mixed.exit_code == 2 and "drop --wavelet" in mixed.output


def test_compare_takes_the_config_files_settings_unless_a_flag_is_given(tmp_path):
    """Flags left at their defaults do not override --config (as in `wno train`)."""
    (tmp_path / "run.yaml").write_text("model_size: micro\nwavelet: haar\nn_levels: 2\n")
    args = ["compare", "--config", str(tmp_path / "run.yaml"), "--steps", "0", "--no-plot"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout[result.stdout.index("{"):])["rows"][0]["config"]
    assert (config["model_size"], config["wavelet"], config["n_levels"]) == ("micro", "haar", 2)
    table = runner.invoke(app, [*args, "--n-levels", "3"])
    assert table.exit_code == 0, table.output
    assert "size micro, haar x 3 levels" in table.stdout


def test_compare_measures_throughput_in_a_table():
    result = runner.invoke(app, ["compare", "--model-size", "micro", "--steps", "1",
                                 "--batch-size", "2", "--no-plot"])
    assert result.exit_code == 0, result.output
    assert "ViT" in result.stdout and "1.00x" in result.stdout


@pytest.mark.parametrize("args,needle", [
    (["--wavelet", "db44"], "unknown wavelet 'db44'"),
    (["--wavelet", "db4", "--n-levels", "4"], "at most 3 level"),
    (["--model-size", "huge"], "model_size='huge'"),
])
def test_compare_rejects_bad_input_with_a_clear_message(args, needle):
    result = runner.invoke(app, ["compare", "--steps", "0", "--no-plot", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_doctor_passes_on_a_ready_machine(tmp_path):
    data_dir = os.environ.get("WNO_TEST_DATA_DIR")
    args = ["doctor", "--storage", f"sqlite:///{tmp_path}/s.db",
            "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    args += ["--data-dir", data_dir] if data_dir else ["--no-data"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for line in ("torch", "wavelet round trip (cpu)", "forward wavelet (cpu)", "study storage"):
        assert line in result.output
    if data_dir:
        assert "50,000 train + 10,000 test images" in result.output


def test_doctor_fails_on_unreachable_storage_and_masks_the_password(tmp_path):
    result = runner.invoke(app, ["doctor", "--quick", "--storage",
                                 "postgresql+psycopg://wno:hunter2@127.0.0.1:1/none",
                                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 1
    assert "FAIL study storage" in result.output and "wno:***@" in result.output
    assert "hunter2" not in result.output


def test_doctor_reports_missing_data(tmp_path):
    result = runner.invoke(app, ["doctor", "--data-dir", str(tmp_path / "empty"), "--storage",
                                 f"sqlite:///{tmp_path}/s.db", "--tracking-uri",
                                 f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 1
    assert "FAIL data set cifar10" in result.output


def test_cli_py_launches_from_a_checkout():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "cli.py", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("train", "compare", "doctor", "study", "worker", "report"):
        assert command in out.stdout


def test_compare_names_the_path_of_the_batch_it_times(monkeypatch):
    """`auto` may choose another path per batch size: the row's path and executed FLOPs are
    those of the batch the throughput is measured at, not of the config's training batch."""
    from wno.model.attention_paths import KernelAttention
    from wno.training import TrainConfig
    from wno.training.compare import compare

    asked: list[int] = []

    def resolve(self, device, batch=32):
        asked.append(batch)
        return "fused" if batch <= 4 else "sparse"

    monkeypatch.setattr(KernelAttention, "resolve", resolve)
    rows = compare(TrainConfig(model_size="micro", batch_size=128), batch_size=4,
                   throughput_steps=0, device="cpu")
    assert rows[0].path == "fused" and 4 in asked and 128 not in asked
