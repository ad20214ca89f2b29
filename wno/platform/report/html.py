"""The report as one self-contained HTML file: tables, and plotly charts drawn in the browser.

plotly.js is embedded once (no CDN, no network fetch: the file opens offline); each chart is a
plain figure dict handed to `Plotly.newPlot`, so the Python side only builds JSON. Tables are
plain HTML (readable without JavaScript) that sort when a header is clicked.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from wno.platform import schema
from wno.platform.report.data import CURVE_METRICS, Report
from wno.platform.report.stats import pareto_front
from wno.platform.report.formats import (
    STATE_WORDS,
    Cell,
    fmt_cost,
    jsonable,
    best_sentence,
    comparison_table,
    effect_sentences,
    factors_text,
    fixed_text,
    importance_rows,
    incomplete,
    is_fraction,
    method_notes,
    metric_label,
    status_line,
    trial_table,
)

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
           "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
BASELINE_COLOR = "#444444"
VISIBLE_CURVES = 5  # the best configurations shown at first; the others are one click away
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


# --- figures (plain plotly.js dicts) ------------------------------------------------------------

def _scale(metric: str) -> float:
    return 100.0 if is_fraction(metric) else 1.0


def _axis_title(metric: str) -> str:
    return f"{metric_label(metric)} (%)" if is_fraction(metric) else metric_label(metric)


def _error_y(mean: list[float], low: list[float], high: list[float]) -> dict:
    return {"type": "data", "symmetric": False, "thickness": 1.5,
            "array": [h - m for m, h in zip(mean, high, strict=True)],
            "arrayminus": [m - lo for m, lo in zip(mean, low, strict=True)]}


def _layout(title: str, x: str, y: str, **extra: Any) -> dict:
    return {"title": {"text": title}, "xaxis": {"title": {"text": x}},
            "yaxis": {"title": {"text": y}}, "height": 420, "margin": {"t": 60, "r": 20},
            "legend": {"font": {"size": 10}}, "hovermode": "closest", **extra}


def factor_figure(report: Report, factor: str) -> dict:
    """Objective against one factor: the pooled main effect, each combination of the other
    factors, and the baseline (per level when the baseline shares the factor, else a band)."""
    m, s = report.objective, _scale(report.objective)
    x = [str(v) for v in report.levels[factor]]
    traces = []
    others = [f for f in report.factors if f != factor]
    combos = _group_by(report.models.to_dict("records"),
                       lambda r: ", ".join(f"{k}={r['factors'].get(k)}" for k in others))
    visible = True if len(combos) <= 6 else "legendonly"  # many lines: one click away
    for i, (label, rows) in enumerate(combos.items()):
        traces.append(_level_trace(rows, factor, x, s, name=label or "mean over seeds",
                                   line={"width": 1, "color": PALETTE[i % len(PALETTE)]},
                                   opacity=0.55, visible=visible))
    eff = report.effects[report.effects["factor"] == factor]
    by_level = {str(r.level): r for r in eff.itertuples()}
    mean, low, high = ([getattr(by_level[v], k) * s if v in by_level else math.nan for v in x]
                       for k in ("mean", "ci_low", "ci_high"))
    if others:
        traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": mean,
                       "name": "pooled over the other factors", "marker": {"size": 10},
                       "line": {"width": 4, "color": "#000000"},
                       "error_y": _error_y(mean, low, high)})
    layout = _layout(f"{metric_label(m)} by {factor}", factor, _axis_title(m),
                     xaxis={"title": {"text": factor}, "type": "category"})
    _add_baseline(report, factor, x, traces, layout)
    return {"data": traces, "layout": layout}


def _add_baseline(report: Report, factor: str, x: list[str], traces: list, layout: dict) -> None:
    refs = report.baselines[report.baselines["baseline"] == report.reference]
    refs = refs[refs["obj_mean"].notna()]
    s = _scale(report.objective)
    if refs.empty:
        return
    if all(factor in f for f in refs["factors"]):
        # One dashed trace per combination of the baseline's other shared factors.
        groups = _group_by(refs.to_dict("records"), lambda r: ", ".join(
            f"{k}={v}" for k, v in r["factors"].items() if k not in ("baseline", factor)))
        for label, rows in groups.items():
            name = f"{report.reference} (baseline{', ' + label if label else ''})"
            traces.append(_level_trace(rows, factor, x, s, name=name,
                                       line={"dash": "dash", "width": 2, "color": BASELINE_COLOR},
                                       marker={"symbol": "diamond", "size": 9}))
    elif len(refs) == 1:
        r = refs.iloc[0]
        low = r["obj_ci_low"] if not math.isnan(r["obj_ci_low"]) else r["obj_mean"]
        high = r["obj_ci_high"] if not math.isnan(r["obj_ci_high"]) else r["obj_mean"]
        layout["shapes"] = [
            {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "y0": low * s, "y1": high * s,
             "fillcolor": "rgba(68,68,68,0.12)", "line": {"width": 0}},
            {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": r["obj_mean"] * s,
             "y1": r["obj_mean"] * s, "line": {"dash": "dash", "color": BASELINE_COLOR}}]
        layout["annotations"] = [{"xref": "paper", "x": 1, "xanchor": "right",
                                  "y": r["obj_mean"] * s, "yanchor": "bottom", "showarrow": False,
                                  "text": f"{report.reference}: mean and 95% CI"}]


def _group_by(rows: list[dict], key) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def _level_trace(rows: list[dict], factor: str, x: list[str], s: float, **style: Any) -> dict:
    """Mean objective with 95% CI error bars of `rows` (one configuration per level of factor)."""
    at: dict[str, dict] = {}
    for r in rows:
        at.setdefault(str(r["factors"].get(factor)), r)
    mean, low, high = ([at[v][k] * s if v in at else math.nan for v in x]
                       for k in ("obj_mean", "obj_ci_low", "obj_ci_high"))
    return {"type": "scatter", "mode": "lines+markers", "x": x, "y": mean,
            "error_y": _error_y(mean, low, high), **style}


def curve_figure(report: Report, metric: str) -> dict | None:
    """Mean over seeds per configuration with a band of one standard deviation."""
    s = _scale(metric)
    ranked = [g for g in report.models.sort_values(
        "obj_mean", ascending=report.direction == "minimize")["group"]]
    shown = set(ranked[:VISIBLE_CURVES]) | set(report.baselines["group"])
    order = ranked + [g for g in report.baselines["group"]]
    traces = []
    for i, group in enumerate(g for g in order if metric in report.curves.get(g, {})):
        f = report.curves[group][metric]
        base = group in set(report.baselines["group"])
        color = BASELINE_COLOR if base else PALETTE[i % len(PALETTE)]
        visible = True if group in shown else "legendonly"
        x, mean, std = list(f["step"]), list(f["mean"] * s), list(f["std"].fillna(0) * s)
        traces.append({"type": "scatter", "mode": "lines", "x": x + x[::-1],
                       "y": [a + b for a, b in zip(mean, std, strict=True)]
                       + [a - b for a, b in zip(mean, std, strict=True)][::-1],
                       "fill": "toself", "fillcolor": _rgba(color, 0.15), "line": {"width": 0},
                       "hoverinfo": "skip", "showlegend": False, "legendgroup": group,
                       "visible": visible})
        traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": mean,
                       "name": group, "legendgroup": group, "visible": visible,
                       "line": {"color": color, "dash": "dash" if base else "solid"},
                       "customdata": list(f["n"]),
                       "hovertemplate": "epoch %{x}: %{y:.2f} (n=%{customdata})"})
    if not traces:
        return None
    steps = max((max(t["x"]) for t in traces if t["x"]), default=0)
    xaxis = {"title": {"text": "epoch (MLflow step)"}}
    if steps <= 30:  # whole epochs only
        xaxis.update({"tickmode": "linear", "dtick": 1})
    layout = _layout(f"{metric_label(metric)} per epoch (mean ± 1 sd over seeds)", "epoch",
                     _axis_title(metric), height=480, xaxis=xaxis)
    return {"data": traces, "layout": layout}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def pareto_figure(report: Report) -> tuple[dict | None, str]:
    """Accuracy (test, else the objective) against FLOPs per image, with the Pareto front."""
    c = report.configs
    if c.empty:
        return None, "no configuration has results yet"
    use_test = c["test_mean"].notna().any()
    metric, col = ("test_acc", "test") if use_test else (report.objective, "obj")
    pts = c[c["flops"].notna() & c[f"{col}_mean"].notna()]
    if pts.empty:
        return None, "no completed trial recorded FLOPs and accuracy"
    s = _scale(metric)
    maximize = use_test or report.direction != "minimize"
    front = pareto_front(list(pts["flops"]), list(pts[f"{col}_mean"]), maximize=maximize)
    traces = []
    for role, symbol, name in ((schema.ROLE_MODEL, "circle", "W-MSA configurations"),
                               (schema.ROLE_BASELINE, "diamond", "baselines")):
        p = pts[pts["role"] == role]
        if p.empty:
            continue
        y = list(p[f"{col}_mean"] * s)
        executed = [fmt_cost("executed_flops", v) for v in p["executed_flops"]]
        traces.append({"type": "scatter", "mode": "markers", "name": name, "x": list(p["flops"]),
                       "y": y, "text": list(p["group"]), "customdata": executed,
                       "marker": {"symbol": symbol, "size": 9,
                                  "color": BASELINE_COLOR if role != schema.ROLE_MODEL
                                  else PALETTE[0]},
                       "error_y": _error_y(y, list(p[f"{col}_ci_low"] * s),
                                           list(p[f"{col}_ci_high"] * s)),
                       "hovertemplate": "%{text}<br>%{x:.3s} FLOPs counted, %{customdata} "
                                        "executed: %{y:.2f}<extra></extra>"})
    f = pts.iloc[front]
    traces.append({"type": "scatter", "mode": "lines", "name": "Pareto front",
                   "x": list(f["flops"]), "y": list(f[f"{col}_mean"] * s),
                   "line": {"shape": "hv", "color": "#d62728", "width": 2}, "hoverinfo": "skip"})
    layout = _layout(f"{metric_label(metric)} against cost", "FLOPs per image (log scale)",
                     _axis_title(metric), xaxis={"type": "log", "title": {
                         "text": "FLOPs per image, counted: the pairs the model needs (log)"}})
    return {"data": traces, "layout": layout}, ""


# --- HTML ---------------------------------------------------------------------------------------

def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: list[str], rows: list[list[Cell]], classes: list[str] | None = None,
           table_id: str = "") -> str:
    head = "".join(f'<th title="click to sort">{_e(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        cells = []
        for c in row:
            attrs = []
            if isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
                attrs.append(f'data-v="{"" if math.isnan(c.value) else c.value}"')
                attrs.append('class="num best"' if c.best else 'class="num"')
            elif c.best:
                attrs.append('class="best"')
            text = f'<a href="{_e(c.link)}" target="_blank" rel="noopener">{_e(c.text)}</a>' \
                if c.link else _e(c.text)
            cells.append(f"<td {' '.join(attrs)}>{text}</td>" if attrs else f"<td>{text}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    tid = f' id="{table_id}"' if table_id else ""
    return (f'<div class="scroll"><table class="sortable"{tid}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _missing_html(report: Report) -> str:
    parts = []
    inc = incomplete(report)
    if not inc.empty:
        expected = len(report.seeds_expected)
        rows = [[Cell(r["group"]),
                 Cell(f"{len(r['seeds_done'])}/{expected}", len(r["seeds_done"])),
                 Cell(", ".join(map(str, r["seeds_missing"]))),
                 *(Cell(str(r[k]), r[k]) for k in ("waiting", "running", "fail"))]
                for r in inc.to_dict("records")]
        parts.append(f"<h3>Configurations with fewer seeds than asked ({len(inc)})</h3>" + _table(
            ["Configuration", "Seeds complete", "Seeds missing", "Waiting", "Running", "Failed"],
            rows, table_id="incomplete"))
    t = report.trials
    for state, title, extra in (("FAIL", "Failed trials", "error"),
                                ("RUNNING", "Running trials", "host")):
        sel = t[t["state"] == state]
        if sel.empty:
            continue
        rows = [[Cell(str(r["number"]), r["number"]), Cell(r["group"]), Cell(str(r["seed"])),
                 Cell(str(r["error"] or "no error recorded") if extra == "error"
                      else f"{r['host'] or '?'} {r['device'] or ''}"),
                 Cell(str(r["started"])[:19] if r["started"] is not None else "")]
                for r in sel.to_dict("records")]
        parts.append(f"<h3>{title} ({len(sel)})</h3>" + _table(
            ["#", "Configuration", "Seed", "Error" if extra == "error" else "Where", "Started"],
            rows, table_id=state.lower()))
    waiting = int((t["state"] == "WAITING").sum())
    if waiting:
        parts.append(f"<p>{waiting} trial(s) are waiting in the queue.</p>")
    return "".join(parts) or "<p>Nothing is missing: every configuration has every seed.</p>"


def to_html(report: Report) -> str:
    from plotly.offline import get_plotlyjs

    figures: list[tuple[str, dict]] = []  # (div id, figure)

    def plot(fig: dict) -> str:
        div = f"plot-{len(figures)}"
        figures.append((div, fig))
        return f'<div class="plot" id="{div}"></div>'

    sections = [_header(report), _summary(report)]
    if not report.configs.empty:
        headers, rows, roles = comparison_table(report)
        ref = _e(report.reference or "baseline")
        sections.append("<section><h2>Comparison</h2><p class=note>One row per configuration, "
                        f"aggregated over seeds; best mean in green; {ref} rows (grey) are the "
                        "reference.</p>"
                        + _table(headers, rows, [r if r == "baseline" else "" for r in roles],
                                 table_id="comparison") + "</section>")
    if report.optuna is not None:
        sections.append(_optuna_section(report, plot))
    if report.factors and report.models["obj_mean"].notna().any():
        sections.append("<section><h2>Factors</h2><div class=grid>"
                        + "".join(plot(factor_figure(report, f)) for f in report.factors)
                        + "</div></section>")
    curves = [c for c in (curve_figure(report, m) for m in CURVE_METRICS) if c]
    sections.append("<section><h2>Learning curves</h2>"
                    + ("".join(plot(c) for c in curves) if curves else "")
                    + (f"<p class=note>{_e(report.curves_note)}.</p>" if report.curves_note else "")
                    + "</section>")
    pareto, why = pareto_figure(report)
    sections.append("<section><h2>Accuracy against FLOPs</h2>"
                    + (plot(pareto) if pareto else f"<p class=note>No chart: {_e(why)}.</p>")
                    + "</section>")
    sections.append(f"<section><h2>Missing and incomplete</h2>{_missing_html(report)}</section>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in [*report.notes, *method_notes(report)])
    sections.append(f"<section><h2>Notes and method</h2><ul>{notes}</ul></section>")
    if not report.trials.empty:
        headers, rows = trial_table(report)
        sections.append(f"<section><h2>Trials ({len(rows)})</h2>"
                        + _table(headers, rows, table_id="trials") + "</section>")

    from plotly.io import templates

    template = templates["plotly_white"].to_plotly_json()
    payload = _script_json({"template": template, "config": PLOT_CONFIG,
                            "figures": [{"id": d, **jsonable(f)} for d, f in figures]})
    return PAGE.format(title=_e(f"wno report: {report.study}"), css=CSS, plotly=get_plotlyjs(),
                       body="\n".join(sections), payload=payload, js=JS)


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no '</script>' or '<!--' can close it)."""
    return json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")


def _header(report: Report) -> str:
    counts = ", ".join(f"{n} {STATE_WORDS.get(s, s.lower())}"
                       for s, n in sorted(report.counts.items())) or "none"
    state = ("progress" if report.in_progress else
             "empty" if not report.counts.get("COMPLETE") else "done")
    desc = f"<p>{_e(report.description)}</p>" if report.description else ""
    return (f"<header><h1>Study <code>{_e(report.study)}</code></h1>{desc}"
            f'<p class="banner {state}" id="status">{_e(status_line(report))}</p>'
            "<dl>"
            f"<dt>Objective</dt><dd>{_e(report.objective)} ({_e(report.direction)})</dd>"
            f"<dt>{_e(factors_text(report).split(': ')[0])}</dt>"
            f"<dd>{_e(factors_text(report).split(': ', 1)[1])}</dd>"
            f"<dt>Fixed</dt><dd>{_e(fixed_text(report) or 'none')}</dd>"
            f"<dt>Seeds asked</dt><dd>{_e(_join(report.seeds_expected) or 'n/a')}</dd>"
            f"<dt>Trials</dt><dd>{_e(counts)}</dd>"
            f"<dt>Storage</dt><dd>{_e(report.storage)}</dd>"
            f"<dt>MLflow</dt><dd>{_e(report.tracking or 'not consulted')}</dd>"
            f"<dt>Generated</dt><dd>{_e(report.generated)}</dd></dl></header>")


def _optuna_section(report: Report, plot) -> str:
    """Optuna's own views: importances, optimisation history, objective against each parameter."""
    views = report.optuna
    title = "Search (Optuna)" if report.kind == "search" else "Parameters (Optuna)"
    parts = [f"<section><h2>{title}</h2><p class=note>Computed by Optuna on the "
             f"{views.trials} completed model trial(s): optuna.importance.get_param_importances"
             f"{' (' + _e(views.evaluator) + ')' if views.evaluator else ''} and "
             "optuna.visualization.</p>"]
    if views.importances:
        headers, rows = importance_rows(report)
        parts.append(_table(headers, rows, table_id="importances"))
    parts.append("<div class=grid>" + "".join(plot(views.figures[k]) for k in
                                              ("history", "importances", "slice")
                                              if k in views.figures) + "</div>")
    parts += [f"<p class=note>{_e(n)}.</p>" for n in views.notes]
    return "".join(parts) + "</section>"


def _join(values: list) -> str:
    return ", ".join(map(str, values))


def _summary(report: Report) -> str:
    best = best_sentence(report)
    items = [f"<li><strong>{_e(best)}</strong></li>" if best
             else "<li>No configuration has a result yet.</li>"]
    items += [f"<li>{_e(s)}</li>" for s in effect_sentences(report)]
    return f'<section><h2>Summary</h2><ul id="summary">{"".join(items)}</ul></section>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1400px;padding:16px 24px;color:#222}
h1{font-size:24px;margin:8px 0}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:32px}h3{font-size:15px}code{font-size:95%}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}dt{color:#666}
dd{margin:0}.banner{padding:8px 12px;border-radius:4px;font-weight:600}
.banner.progress{background:#fff4ce;border:1px solid #e0b600}.banner.done{background:#e6f4ea;
border:1px solid #34a853}.banner.empty{background:#fde7e9;border:1px solid #d93025}
.note{color:#555}.scroll{overflow-x:auto;max-height:720px;overflow-y:auto}
table{border-collapse:collapse;font-size:12.5px;white-space:nowrap}
th,td{border-bottom:1px solid #e5e5e5;padding:3px 8px;text-align:left}
th{background:#f5f5f5;cursor:pointer;position:sticky;top:0}td.num{text-align:right}
td.best{background:#d7f5dd;font-weight:700}tr.baseline td{background:#f0f0f0;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
.plot{min-height:420px}
"""

JS = """
for (const f of REPORT.figures) {
  const layout = Object.assign({template: REPORT.template}, f.layout);
  Plotly.newPlot(f.id, f.data, layout, REPORT.config);
}
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
    const asc = th.dataset.dir !== "asc";
    th.dataset.dir = asc ? "asc" : "desc";
    const key = (tr) => {
      const td = tr.cells[col];
      if (td.dataset.v === undefined) return td.textContent;
      return td.dataset.v === "" ? NaN : Number(td.dataset.v);
    };
    const rows = Array.from(table.tBodies[0].rows);
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (typeof x === "number" && typeof y === "number") {
        if (isNaN(x)) return 1;
        if (isNaN(y)) return -1;
        return asc ? x - y : y - x;
      }
      return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
    });
    for (const r of rows) table.tBodies[0].appendChild(r);
  }));
}
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
<script>{plotly}</script>
</head><body>
{body}
<script>const REPORT = {payload};
{js}</script>
</body></html>
"""
