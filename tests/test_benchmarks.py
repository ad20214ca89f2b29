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


def test_a_kept_section_is_marked_stale_once_the_code_moves_on(monkeypatch):
    """`--keep-others` keeps the sections it does not rerun, but marks their rows of other code;
    rows of this code (or of a commit that changed no code since) stay unmarked."""
    current = {**row("train step", 1.0, "s", 2.0), "commit": "a" * 40, "dirty": False}
    older = {**row("train step", 1.0, "s", 2.0), "commit": "b" * 40, "dirty": False}
    monkeypatch.setattr(run, "is_stale", lambda commit: commit != "a" * 40)
    monkeypatch.setattr(run, "_full", lambda prefix: prefix[0] * 40)
    section = run.render_section("model", [current, older]).replace(run.STALE, "")
    kept = run.remark(section)
    lines = [line for line in kept.splitlines() if "commit " in line]
    assert run.STALE not in lines[0] and lines[1].count(run.STALE) == 1
    assert lines[1].endswith("`" + older["command"] + "` |")
    assert run.remark(kept) == kept  # marked once
    merged = run.merge("# Benchmarks\n\n" + section, {"data": []}, {}, 1.0, "cmd")
    assert merged.count(run.STALE) == 1


def test_staleness_follows_the_code_not_the_commit():
    head = code_version()["commit"]
    assert head and not run.is_stale(head)
    assert run.is_stale(None) and run.is_stale("0" * 40)
