"""The report's text formats (Markdown, CSV, LaTeX, JSON) and the pieces the HTML shares.

Accuracies are fractions in the data and percentages on the page; differences of accuracies are
percentage points (pp). The tables are built once (`comparison_table`, `trial_table`) as rows of
`Cell`s and written out by each format.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from wno.platform import schema
from wno.platform.report.data import COSTS, CURVE_METRICS, Report
from wno.platform.report.optuna_views import rounded

STATE_WORDS = {"COMPLETE": "complete", "RUNNING": "running", "WAITING": "waiting",
               "FAIL": "failed", "PRUNED": "pruned"}
COST_LABELS = {"params": "Params", "flops": "FLOPs/img", "executed_flops": "Executed FLOPs/img",
               "tokens": "Tokens",
               "wall_time": "Train time", "throughput": "img/s"}


# --- numbers as text ----------------------------------------------------------------------------

def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_fraction(metric: str) -> bool:
    """Accuracies are stored as fractions in [0, 1] and shown as percentages."""
    return "acc" in metric


def fmt_metric(metric: str, v: float) -> str:
    if _nan(v):
        return "n/a"
    return f"{100 * v:.2f}%" if is_fraction(metric) else f"{v:.4g}"


def fmt_delta(metric: str, v: float, signed: bool = True) -> str:
    """A difference or interval half-width: percentage points for accuracies."""
    if _nan(v):
        return "n/a"
    sign = "+" if signed else ""
    return f"{100 * v:{sign}.2f} pp" if is_fraction(metric) else f"{v:{sign}.4g}"


def fmt_mean_ci(metric: str, mean: float, low: float, high: float) -> str:
    """"71.20% ± 0.45 pp" (mean ± half-width of the 95% interval); no interval when n < 2."""
    if _nan(mean):
        return "n/a"
    if _nan(low):
        return f"{fmt_metric(metric, mean)} (n<2, no CI)"
    return f"{fmt_metric(metric, mean)} ± {fmt_delta(metric, (high - low) / 2, signed=False)}"


def fmt_diff_ci(metric: str, diff: float, low: float, high: float) -> str:
    """"+1.20 pp [+0.50, +1.90]": a difference with its 95% interval."""
    if _nan(diff):
        return "n/a"
    if _nan(low):
        return f"{fmt_delta(metric, diff)} (n<2 on a side, no CI)"
    scale = 100 if is_fraction(metric) else 1
    return f"{fmt_delta(metric, diff)} [{scale * low:+.2f}, {scale * high:+.2f}]"


def fmt_p(p: float) -> str:
    if _nan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_cost(name: str, v: float) -> str:
    if _nan(v):
        return "n/a"
    if name in ("params", "flops", "executed_flops"):
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(v) >= scale:
                return f"{v / scale:.2f}{unit}"
        return f"{v:.0f}"
    if name == "wall_time":
        if v >= 3600:
            return f"{v / 3600:.2f} h"
        return f"{v / 60:.1f} min" if v >= 60 else f"{v:.1f} s"
    return f"{v:,.0f}"


def metric_label(metric: str) -> str:
    return metric.replace("_", " ")


# --- shared content -----------------------------------------------------------------------------

def factors_text(report: Report) -> str:
    """'Factors: wavelet, n_levels', or for a search 'Searched: lr, dropout'."""
    if report.kind == "search":
        return f"Searched: {', '.join(report.columns) or 'none'}"
    return f"Factors: {', '.join(report.factors) or 'none'}"


def fixed_text(report: Report) -> str:
    """The settings every trial shares (the study's base), e.g. 'mode=periodization'."""
    return ", ".join(f"{k}={v}" for k, v in report.fixed.items())


def status_line(report: Report) -> str:
    """The one sentence at the top: finished, in progress, empty or nothing complete."""
    counts, total = report.counts, len(report.trials)
    done = counts.get("COMPLETE", 0)
    rest = ", ".join(f"{counts[s]} {STATE_WORDS[s]}"
                     for s in ("RUNNING", "WAITING", "FAIL", "PRUNED") if counts.get(s))
    if total == 0:
        return "This study has no trials yet: there is nothing to report."
    if report.in_progress:
        return (f"In progress: {done} of {total} trials complete ({rest}). Every number below "
                "will change as trials finish.")
    if done == 0:
        return f"No trial completed ({rest}): there is nothing to aggregate."
    return f"Finished: {done} of {total} trials complete" + (f" ({rest})." if rest else ".")


def search_sentence(report: Report) -> str | None:
    """A search study's best trial as Optuna finds it, with its parameters, rounded."""
    views = report.optuna
    if report.kind != "search" or views is None or views.best is None:
        return None
    b, m = views.best, report.objective
    params = ", ".join(f"{k}={v}" for k, v in b["params"].items())
    text = (f"Best trial (Optuna's best_trial, {report.direction} {metric_label(m)}): "
            f"#{b['number']}, {fmt_metric(m, b['value'])} with {params}")
    if b.get("test_acc") is not None:
        text += f"; its test accuracy {fmt_metric('test_acc', b['test_acc'])} (reported, not selected on)"
    if views.importances:
        top, share = next(iter(views.importances.items()))
        text += f"; the most important parameter is {top} ({share:.0%} of the variance explained)"
    return text + f". From {views.trials} completed trial(s), one seed each."


def importance_rows(report: Report) -> tuple[list[str], list[list[Cell]]]:
    """Optuna's parameter importances, most important first."""
    views = report.optuna
    rows = [[Cell(name), Cell(f"{value:.3f}")] for name, value in views.importances.items()]
    return ["Parameter", f"Importance ({views.evaluator})"], rows


def best_sentence(report: Report) -> str | None:
    """The best model configuration, its interval, and how it compares with the reference."""
    if report.kind == "search":
        return search_sentence(report)
    b = report.best()
    if b is None:
        return None
    m = report.objective
    text = (f"Best configuration by mean {metric_label(m)} ({report.direction}): {b['group']}: "
            f"{fmt_mean_ci(m, b['obj_mean'], b['obj_ci_low'], b['obj_ci_high'])}")
    if b["obj_n"] >= 2:
        text += f" (95% CI, n={b['obj_n']})"
    if report.reference and not _nan(b["d_obj"]):
        text += (f"; against {report.reference} ({b['ref_group']}): "
                 f"{fmt_diff_ci(m, b['d_obj'], b['d_obj_low'], b['d_obj_high'])}")
        text += (f", Welch p = {fmt_p(b['d_obj_p'])} (Holm {fmt_p(b['d_obj_p_holm'])})"
                 if not _nan(b["d_obj_p"]) else
                 ", no test possible (fewer than two seeds on a side, or no spread)")
    elif report.reference:
        text += f"; no difference to {report.reference} can be given (no matching baseline data)"
    if b["obj_n"] < 2:
        return text + ". One seed only: no interval, no test."
    others = report.models[report.models["group"] != b["group"]]
    overlap = others[(others["obj_ci_high"] >= b["obj_ci_low"])
                     & (others["obj_ci_low"] <= b["obj_ci_high"])]
    if len(overlap):
        text += (f". {len(overlap)} other configuration(s) have 95% intervals overlapping the "
                 "best one's, so the ranking among them is not settled")
    return text + "."


def effect_sentences(report: Report) -> list[str]:
    """What each factor does: its best and worst level (pooled main effect) and the spread."""
    out = []
    m = report.objective
    for f in report.factors:
        e = report.effects[(report.effects["factor"] == f) & report.effects["mean"].notna()]
        if e.empty:
            out.append(f"{f}: no completed trials yet.")
            continue
        if len(e) == 1:
            r = e.iloc[0]
            out.append(f"{f}: only {r['level']} has results ({fmt_metric(m, r['mean'])}).")
            continue
        lower = report.direction == "minimize"
        best = e.loc[e["mean"].idxmin() if lower else e["mean"].idxmax()]
        worst = e.loc[e["mean"].idxmax() if lower else e["mean"].idxmin()]
        overlap = not (best["ci_low"] > worst["ci_high"] or worst["ci_low"] > best["ci_high"])
        verdict = ("their 95% intervals overlap" if overlap or _nan(best["ci_low"])
                   else "their 95% intervals do not overlap")
        spread = fmt_delta(m, abs(best["mean"] - worst["mean"]), signed=False)
        out.append(f"{f}: best {best['level']} ({_level_text(m, best)}), worst {worst['level']} "
                   f"({_level_text(m, worst)}): a spread of {spread}; {verdict}.")
    return out


def _level_text(metric: str, e: pd.Series) -> str:
    return f"{fmt_mean_ci(metric, e['mean'], e['ci_low'], e['ci_high'])}, n={e['n']}"


def method_notes(report: Report) -> list[str]:
    notes = []
    if report.optuna is not None:
        notes.append("Parameter importances, the optimisation history and the objective against "
                     "each parameter are Optuna's own (optuna.importance.get_param_importances "
                     f"with {report.optuna.evaluator or 'no evaluator'}, "
                     "optuna.visualization), computed on the completed model trials.")
    return notes + [
        "Intervals are 95% t-intervals of the mean over seeds; ± is their half-width.",
        "Differences are configuration minus baseline, with Welch's 95% interval; p-values are "
        "two-sided Welch t-tests, unadjusted and Holm-adjusted over the configurations compared.",
        "A baseline configuration is the reference of a configuration when the factors it "
        "carries (e.g. model_size) agree and the budget (dataset, epochs, train_size) is the same.",
        "Factor effects pool every completed trial at a level over the other factors.",
        "FLOPs/img counts the attention pairs each model needs (with the kernel: its support); "
        "Executed FLOPs/img, the pairs its attention path computed on the training device (the "
        "fused and dense paths compute every pair). The chart plots the first.",
    ]


def incomplete(report: Report) -> pd.DataFrame:
    """Configurations with fewer completed seeds than the study asked for."""
    c = report.configs
    if c.empty:
        return c
    return c[c["seeds_missing"].map(len) > 0]


# --- tables as cells ----------------------------------------------------------------------------

@dataclass
class Cell:
    text: str
    value: Any = None  # raw number for sorting (HTML)
    best: bool = False
    link: str | None = None


def comparison_table(report: Report) -> tuple[list[str], list[list[Cell]], list[str]]:
    """(headers, rows, row roles) of the comparison table: one row per configuration."""
    m, ref = report.objective, report.reference or "baseline"
    headers = ["Model", *report.columns, "Seeds", f"{metric_label(m)} (mean ± 95% CI)", "sd",
               "test acc (mean ± 95% CI)", f"Δ {metric_label(m)} vs {ref} [95% CI]", "p",
               "p (Holm)", f"Δ test acc vs {ref} [95% CI]", "p (test)",
               *(COST_LABELS[c] for c in COSTS)]
    best_obj, best_test = report.best("obj_mean"), report.best("test_mean")
    rows, roles = [], []
    expected = len(report.seeds_expected)
    for r in report.configs.to_dict("records"):
        model = "W-MSA" if r["role"] == schema.ROLE_MODEL else str(r["baseline"])
        row = [Cell(model, model)]
        row += [Cell(str(rounded(r["factors"][f])) if f in r["factors"] else "·",
                     r["factors"].get(f)) for f in report.columns]
        row.append(Cell(f"{r['obj_n']}/{expected}" if expected else str(r["obj_n"]), r["obj_n"]))
        row.append(Cell(fmt_mean_ci(m, r["obj_mean"], r["obj_ci_low"], r["obj_ci_high"]),
                        r["obj_mean"], best_obj is not None and r["group"] == best_obj["group"]))
        row.append(Cell(fmt_delta(m, r["obj_std"], signed=False), r["obj_std"]))
        row.append(Cell(fmt_mean_ci("test_acc", r["test_mean"], r["test_ci_low"],
                                    r["test_ci_high"]), r["test_mean"],
                        best_test is not None and r["group"] == best_test["group"]))
        is_model = r["role"] == schema.ROLE_MODEL
        row.append(Cell(fmt_diff_ci(m, r["d_obj"], r["d_obj_low"], r["d_obj_high"])
                        if is_model else "reference", r["d_obj"]))
        row.append(Cell(fmt_p(r["d_obj_p"]) if is_model else "", r["d_obj_p"]))
        row.append(Cell(fmt_p(r["d_obj_p_holm"]) if is_model else "", r["d_obj_p_holm"]))
        row.append(Cell(fmt_diff_ci("test_acc", r["d_test"], r["d_test_low"], r["d_test_high"])
                        if is_model else "reference", r["d_test"]))
        row.append(Cell(fmt_p(r["d_test_p"]) if is_model else "", r["d_test_p"]))
        row += [Cell(fmt_cost(c, r[c]), r[c]) for c in COSTS]
        rows.append(row)
        roles.append(r["role"])
    return headers, rows, roles


def trial_table(report: Report) -> tuple[list[str], list[list[Cell]]]:
    m = report.objective
    headers = ["#", "State", "Configuration", "Seed", metric_label(m), "test acc",
               *(COST_LABELS[c] for c in COSTS), "Host", "Device", "Error", "MLflow run"]
    rows = []
    for t in report.trials.to_dict("records"):
        run = t["mlflow_run"]
        rows.append([
            Cell(str(t["number"]), t["number"]), Cell(t["state"], t["state"]),
            Cell(t["group"], t["group"]), Cell(_text(t["seed"]), t["seed"]),
            Cell(fmt_metric(m, t["objective"]), t["objective"]),
            Cell(fmt_metric("test_acc", t["test_acc"]), t["test_acc"]),
            *(Cell(fmt_cost(c, t[c]), t[c]) for c in COSTS),
            Cell(_text(t["host"])), Cell(_text(t["device"])),
            Cell(_text(t["error"]) + (f" (a retry of #{t['retry_of']})"
                                      if not _nan(t["retry_of"]) else "")),
            Cell(_text(run)[:8], link=report.run_links.get(run) if isinstance(run, str) else None),
        ])
    return headers, rows


def _text(v: Any) -> str:
    return "" if _nan(v) else str(v)


# --- Markdown -----------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[Cell]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
             "|" + "---|" * len(headers)]
    for row in rows:
        cells = [f"**{_md_escape(c.text)}**" if c.best else _md_escape(c.text) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    out = [f"# Study `{report.study}`", ""]
    if report.description:
        out += [report.description, ""]
    out += [f"**{status_line(report)}**", "",
            f"- Objective: {report.objective} ({report.direction})",
            f"- {factors_text(report)}; seeds asked: "
            f"{', '.join(map(str, report.seeds_expected)) or 'n/a'}",
            f"- Fixed settings: {fixed_text(report) or 'none'}",
            f"- Storage: {report.storage}; MLflow: {report.tracking or 'not consulted'}",
            f"- Generated: {report.generated}", "", "## Summary", ""]
    best = best_sentence(report)
    out += [f"- {best}" if best else "- No configuration has a result yet."]
    out += [f"- {s}" for s in effect_sentences(report)] + [""]
    if report.optuna is not None and report.optuna.importances:
        headers, rows = importance_rows(report)
        out += ["## Parameter importances (Optuna)", "", _md_table(headers, rows), ""]
    if not report.configs.empty:
        headers, rows, _ = comparison_table(report)
        out += ["## Comparison", "", _md_table(headers, rows), ""]
    out += ["## Missing and incomplete", ""] + _md_missing(report) + [""]
    if report.curves_note:
        out += [f"Learning curves: {report.curves_note}.", ""]
    out += ["## Notes", ""] + [f"- {n}" for n in [*report.notes, *method_notes(report)]] + [""]
    if not report.trials.empty:
        headers, rows = trial_table(report)
        out += ["## Trials", "", _md_table(headers, rows), ""]
    return "\n".join(out)


def _md_missing(report: Report) -> list[str]:
    lines = []
    inc = incomplete(report)
    for r in inc.to_dict("records"):
        lines.append(f"- {r['group']}: {len(r['seeds_done'])} of {len(report.seeds_expected)} "
                     f"seeds complete (missing {', '.join(map(str, r['seeds_missing']))}; "
                     f"{r['waiting']} waiting, {r['running']} running, {r['fail']} failed)")
    t = report.trials
    for f in t[t["state"] == "FAIL"].to_dict("records"):
        lines.append(f"- trial #{f['number']} failed ({f['group']}, seed {f['seed']}): "
                     f"{f['error'] or 'no error recorded'}")
    for f in t[t["state"] == "RUNNING"].to_dict("records"):
        lines.append(f"- trial #{f['number']} running ({f['group']}, seed {f['seed']}) on "
                     f"{f['host'] or '?'} {f['device'] or ''}".rstrip())
    return lines or ["Nothing is missing: every configuration has every seed."]


# --- CSV, LaTeX, JSON ---------------------------------------------------------------------------

CSV_COLUMNS = ["group", "role", "baseline", "obj_n", "obj_mean", "obj_std", "obj_ci_low",
               "obj_ci_high", "test_n", "test_mean", "test_std", "test_ci_low", "test_ci_high",
               "ref_group", "d_obj", "d_obj_low", "d_obj_high", "d_obj_p", "d_obj_p_holm",
               "d_test", "d_test_low", "d_test_high", "d_test_p", "d_test_p_holm", *COSTS,
               "waiting", "running", "fail"]


def to_csv(report: Report) -> str:
    """The comparison table, one row per configuration, raw numbers (fractions, not %)."""
    c = report.configs
    if c.empty:
        return ",".join(["group", "role", *report.columns, *CSV_COLUMNS[3:]]) + "\n"
    table = c[["group", "role", "baseline"]].copy()
    for f in report.columns:
        table[f] = c["factors"].map(lambda d, f=f: d.get(f))
    table["seeds_missing"] = c["seeds_missing"].map(lambda s: " ".join(map(str, s)))
    table = pd.concat([table, c[CSV_COLUMNS[3:]]], axis=1)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "Δ": r"$\Delta$", "·": r"$\cdot$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(report: Report) -> str:
    """A booktabs table of the comparison (needs \\usepackage{booktabs}); best values in bold."""
    headers, rows, roles = comparison_table(report)
    keep = [i for i, h in enumerate(headers)
            if not h.startswith(("sd", "p (test)", "Δ test")) and h not in ("Tokens", "img/s")]
    spec = "l" * (1 + len(report.columns)) + "r" * (len(keep) - 1 - len(report.columns))
    lines = [f"% wno report: study {report.study}; {status_line(report)}",
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex(headers[i]) for i in keep) + r" \\", r"\midrule"]
    for i, (row, role) in enumerate(zip(rows, roles, strict=True)):
        if role == schema.ROLE_BASELINE and i and roles[i - 1] == schema.ROLE_MODEL:
            lines.append(r"\midrule")
        cells = [rf"\textbf{{{_tex(row[k].text)}}}" if row[k].best else _tex(row[k].text)
                 for k in keep]
        lines.append(" & ".join(cells) + r" \\")
    caption = (f"Study {report.study}: {metric_label(report.objective)} and test accuracy, mean "
               f"± 95% CI half-width over seeds; Δ against {report.reference or 'the baseline'} "
               "with Welch's 95% CI and p-value (Holm-adjusted in its own column).")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}",
              rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]+', '-', report.study)}}}", r"\end{table}", ""]
    return "\n".join(lines)


def jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "isoformat"):
        return None if pd.isna(v) else v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return jsonable(v.item())
    if v is pd.NaT or v is pd.NA:
        return None
    return v


def _records(df: pd.DataFrame) -> list[dict]:
    return [jsonable(r) for r in df.to_dict(orient="records")]


def to_json(report: Report) -> str:
    best = report.best()
    data = {
        "study": report.study, "description": report.description, "kind": report.kind,
        "objective": {"metric": report.objective, "direction": report.direction},
        "status": status_line(report), "in_progress": report.in_progress,
        "counts": report.counts, "storage": report.storage, "tracking": report.tracking,
        "generated": report.generated, "factors": report.factors, "levels": report.levels,
        "seeds_expected": report.seeds_expected, "reference": report.reference,
        "best": None if best is None else best["group"],
        "summary": {"best": best_sentence(report), "factors": effect_sentences(report)},
        "configurations": _records(report.configs),
        "comparisons": _records(report.comparisons),
        "effects": _records(report.effects),
        "trials": _records(report.trials),
        "curves": {g: {m: _records(f) for m, f in ms.items()} for g, ms in report.curves.items()},
        "curves_note": report.curves_note, "run_links": report.run_links,
        "notes": report.notes, "methods": method_notes(report), "fixed": report.fixed,
        "optuna": None if report.optuna is None else {
            "importances": report.optuna.importances, "evaluator": report.optuna.evaluator,
            "best": report.optuna.best, "trials": report.optuna.trials,
            "notes": report.optuna.notes},
        "curve_metrics": list(CURVE_METRICS),
    }
    return json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n"
