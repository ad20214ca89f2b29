"""Study and config files a hostile or careless author could write: each class is refused quickly,
in bounded memory, with a located message, exit 2, and nothing enqueued.

Classes: a plan too large (grid, seed count, search budget), YAML aliases that expand without
bound, nesting too deep for the parser, numbers that are not finite, integers too large, a file
too large, keys and strings that make suggestions and messages huge. The same rules hold for
`wno train --config`, `--set` and the flags.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from wno.platform import spec as spec_module
from wno.platform.spec import MAX_TRIALS, SpecError, load_spec

LIMIT_MB = 300  # the bound on a refusal's memory

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(8))


def _values(n: int, scale: float) -> str:
    return "[" + ", ".join(f"{(i + 1) * scale:.8f}" for i in range(n)) + "]"


HOSTILE = {
    # (file text, what the message says, where it points)
    "grid_too_large": ("name: big\nbase: {model_size: micro}\ngrid:\n"
                       f"  lr: {_values(1000, 1e-6)}\n  weight_decay: {_values(1000, 1e-5)}\n"
                       "seeds: 100\n", "would plan up to 100,000,000 trials", "grid (line 3)"),
    "seed_count": ("name: s\nbase: {model_size: micro}\ngrid: {lr: [0.001]}\nseeds: 100000000\n",
                   "100,000,000 seeds would plan", "seeds (line 4)"),
    "search_budget": ("name: s\nbase: {model_size: micro}\nsearch: {n_trials: 100000000, params: "
                      "{lr: {low: 0.0001, high: 0.01}}}\n", "100,000,000 search trials",
                      "search.n_trials (line 3)"),
    "billion_laughs": ("name: lol\ngrid: {lr: [0.001]}\n" + LAUGHS, "aliases (*name) are not "
                       "allowed", "line 4, column 8"),
    "deep_nesting": ("name: d\ngrid: " + "[" * 100_000 + "]" * 100_000 + "\n",
                     "nested deeper than 32 levels", "line 2"),
    "not_finite": ("name: n\nbase: {lr: .nan, weight_decay: .inf}\ngrid: {dropout: [0.0, 0.1]}\n",
                   "lr=nan must be a finite number", "base.lr (line 2)"),
    "not_finite_in_grid": ("name: n\ngrid: {drop_path: [0.1, -.inf]}\n",
                           "drop_path=-inf must be a finite number", "grid.drop_path[1] (line 2)"),
    "not_finite_step": ("name: n\nsearch: {n_trials: 3, params: {lr: {low: 0.0001, high: 0.01, "
                        "step: .inf}}}\n", "must be a positive number", "search.params.lr.step"),
    "integer_too_large": ("name: n\nbase: {epochs: 100000000000000000000}\ngrid: {dropout: [0.0]}\n",
                          "epochs=100000000000000000000 is too large", "base.epochs (line 2)"),
    "file_too_large": ("name: n\ndescription: " + "x" * 1_100_000 + "\ngrid: {dropout: [0.0]}\n",
                       "a study file may be at most 1,000,000 bytes", "study file"),
    "long_value": ("name: n\ngrid: {wavelet: [" + "x" * 900_000 + "]}\n",
                   "characters long; at most 4096", "grid.wavelet[0] (line 2)"),
    "many_unknown_fields": ("name: n\ngrid:\n" + "".join(f"  field{i}: [1]\n" for i in range(3000)),
                            "more problems", "grid.field0 (line 3)"),
}


def _refuse(tmp_path: Path, text: str, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run `wno study create FILE` in a fresh process; (its result, its peak RSS in MB)."""
    path = tmp_path / "study.yaml"
    path.write_text(text)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    code = ("import json, resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
            "print(json.dumps({'rc': r.returncode, 'out': r.stdout[-20000:], "
            "'err': r.stderr[-20000:], "
            "'mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}))\n")
    wrapper = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "wno", "study",
                              "create", str(path), "--storage", storage, *args],
                             capture_output=True, text=True, timeout=180,
                             env={**os.environ, "COLUMNS": "200"})
    doc = json.loads(wrapper.stdout)
    return subprocess.CompletedProcess([], doc["rc"], doc["out"], doc["err"]), doc["mb"]


def _studies(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return [r[0] for r in con.execute("SELECT study_name FROM studies")] if "studies" in \
            tables else []


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_study_file_is_refused_quickly_located_and_enqueues_nothing(tmp_path, name):
    text, message, place = HOSTILE[name]
    result, mb = _refuse(tmp_path, text)
    err = " ".join(result.stderr.split())
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert message in err and place in err, err[:3000]
    assert "Traceback" not in result.stderr and len(result.stderr) < 20_000
    assert mb < LIMIT_MB, f"{name} took {mb} MB"
    assert _studies(tmp_path / "optuna.db") == []  # nothing enqueued


def test_plans_are_counted_before_they_are_expanded(tmp_path, monkeypatch):
    """The refusal comes from the sizes alone: neither the plan nor a seed list is built."""
    def boom(*a, **k):
        raise AssertionError("the plan was expanded")

    monkeypatch.setattr(spec_module, "_plan", boom)
    for name in ("grid_too_large", "seed_count", "search_budget"):
        (tmp_path / "s.yaml").write_text(HOSTILE[name][0])
        with pytest.raises(SpecError, match="a study may plan at most"):
            load_spec(tmp_path / "s.yaml")


def test_the_cap_is_documented_configurable_and_exact(tmp_path, monkeypatch):
    text = f"name: c\nbase: {{model_size: micro}}\ngrid: {{lr: {_values(10, 1e-4)}}}\nseeds: 3\n"
    (tmp_path / "s.yaml").write_text(text)
    assert len(load_spec(tmp_path / "s.yaml", max_trials=30).plan) == 30  # exactly at the cap
    (tmp_path / "t.yaml").write_text(text.replace(_values(10, 1e-4), _values(11, 1e-4)))
    with pytest.raises(SpecError, match="up to 33 trials; a study may plan at most 30"):
        load_spec(tmp_path / "t.yaml", max_trials=30)
    monkeypatch.setenv("WNO_MAX_TRIALS", "20")
    with pytest.raises(SpecError, match="at most 20 .WNO_MAX_TRIALS raises the cap"):
        load_spec(tmp_path / "s.yaml")
    monkeypatch.setenv("WNO_MAX_TRIALS", "lots")
    with pytest.raises(SpecError, match="WNO_MAX_TRIALS='lots' must be a positive integer"):
        load_spec(tmp_path / "s.yaml")
    assert MAX_TRIALS >= 1000  # large GPU studies (hundreds of trials) fit by default
    from typer.testing import CliRunner

    from wno.cli import app

    monkeypatch.delenv("WNO_MAX_TRIALS")
    cli = CliRunner().invoke(app, ["study", "create", str(tmp_path / "t.yaml"), "--dry-run",
                                   "--max-trials", "32", "--storage",
                                   f"sqlite:///{tmp_path / 'o.db'}"])
    assert cli.exit_code == 2 and "a study may plan at most 32" in cli.output
    ok = CliRunner().invoke(app, ["study", "create", str(tmp_path / "t.yaml"), "--dry-run",
                                  "--max-trials", "33", "--storage",
                                  f"sqlite:///{tmp_path / 'o.db'}"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("args,message", [
    (["--lr", "nan"], "lr=nan must be a finite number"),
    (["--warmup-epochs", "inf"], "warmup_epochs=inf must be a finite number"),
    (["--set", "weight_decay=-inf"], "weight_decay='-inf' must be a finite number"),
    (["--set", "epochs=1e30"], "epochs='1e30' must be an integer"),
    (["--set", "dropout=NaN"], "dropout='NaN' must be a finite number"),
])
def test_train_refuses_the_same_numbers_on_the_command_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from wno.cli import app

    result = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--save-dir",
                                      str(tmp_path / "run"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,message", [
    ("billion_laughs", "YAML aliases (*name) are not allowed"),
    ("deep_nesting", "nested deeper than 32 levels"),
    ("not_finite", "lr=nan must be a finite number"),
    ("file_too_large", "a config file may be at most 1,000,000 bytes")])
def test_train_config_files_follow_the_same_rules(tmp_path, name, message):
    from typer.testing import CliRunner

    from wno.cli import app

    text = HOSTILE[name][0].replace("name: ", "model: wavelet\n# ", 1)
    text = text.replace("base: {lr: .nan, weight_decay: .inf}", "lr: .nan")
    (tmp_path / "cfg.yaml").write_text(text)
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "cfg.yaml"),
                                      "--save-dir", str(tmp_path / "run")])
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and message in out and "Traceback" not in out, out[:2000]
    assert not (tmp_path / "run").exists()
