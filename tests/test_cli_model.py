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
    assert (on["tokens"], off["tokens"], vit["tokens"]) == (1329, 1329, 65)
    assert on["attention_pairs"] < 0.2 * off["attention_pairs"]
    assert on["flops"] < off["flops"]
    assert on["params"] - off["params"] == 18  # the kernel's parameters
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"


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
