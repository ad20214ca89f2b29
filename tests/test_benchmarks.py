"""BENCHMARKS.md is written by the program that measured: every row says on which device, with
which torch and which commit it was measured, and a row of older code is marked stale."""

from __future__ import annotations

import json

from benchmarks import bench_gpu, run
from benchmarks.common import provenance, row
from wno.base.code_version import code_version


def test_a_row_measured_now_names_this_machine_and_this_code():
    r = row("train step", 1.0, "s", 2.0)
    where = provenance()
    assert (r["device"], r["torch"], r["commit"]) == (where["device"], where["torch"],
                                                      code_version()["commit"])
    text = run.measured_on(r)
    assert where["device"] in text and f"torch {where['torch']}" in text and "STALE" not in text


def test_a_row_of_other_code_is_marked_stale_and_the_table_shows_it():
    old = {**row("train step", 1.0, "s", 2.0), "commit": "0" * 40, "dirty": False}
    unknown = {**row("train step", 1.0, "s", 2.0), "commit": None}
    assert "STALE: measured on older code" in run.measured_on(old)
    assert "commit unknown" in run.measured_on(unknown) and "STALE" in run.measured_on(unknown)
    table = run.render_section("model", [old])
    assert "| measured on |" in table and "commit 0000000000 **STALE" in table


def test_recorded_gpu_rows_carry_the_run_that_measured_them(tmp_path, monkeypatch):
    saved = {"date": "2026-11-30", "device": "NVIDIA H200", "torch": "2.11.0",
             "commit": "1" * 40, "dirty": False,
             "rows": [{"name": "GPU train", "value": 1.0, "unit": "images/s", "baseline": None,
                       "ratio": None, "command": "", "notes": "bf16"}]}
    path = tmp_path / "gpu_results.json"
    path.write_text(json.dumps(saved))
    monkeypatch.setattr(bench_gpu, "RESULTS", path)
    (r,) = bench_gpu.recorded()
    text = run.measured_on(r)
    assert text.startswith("NVIDIA H200, torch 2.11.0, commit 1111111111") and "STALE" in text
    assert r["notes"].startswith("recorded 2026-11-30")
