"""The HTML report opened in a real headless Chromium (Debian's /usr/bin/chromium) through the
Chrome DevTools Protocol (Python `playwright`, driving the system browser; no browser download).

Checks: no console errors or page errors, every chart drawn (an SVG with traces in each plot
div), no request leaves the page (the file itself only; everything else is recorded and
aborted), text from the study is escaped, tables sort. Screenshots are kept in
test-artifacts/ (or $WNO_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import fake_study as fs
from wno.platform import report as rep

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install "
                                       "chromium; .ci/run does it)")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="python package playwright is not installed")
ARTIFACTS = Path(os.environ.get("WNO_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
XSS = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """HTML reports of: the known study (with MLflow curves), an in-progress sweep whose
    description tries to inject script, and an empty study."""
    d = tmp_path_factory.mktemp("browser")
    url, tracking = f"sqlite:///{d / 'optuna.db'}", f"sqlite:///{d / 'mlflow.db'}"
    spec, trials = fs.known_trials("known")
    fs.write_study(url, spec, trials, tracking_uri=tracking)
    grid, sweep = fs.synthetic_trials(40, seeds=3, running=4, waiting=6,
                                      grid={"use_kernel": [True, False], "n_levels": [1, 2, 3],
                                            "model_size": ["micro", "tiny"]})
    fs.write_study(url, fs.study_spec("sweep", grid=grid, seeds=range(3), description=XSS), sweep)
    fs.write_study(url, fs.study_spec("empty", grid={"wavelet": ["haar"]}, seeds=[0]), [])
    paths = {}
    for name in ("known", "sweep", "empty"):
        report = rep.build_report(name, url, tracking)
        paths[name] = (rep.write_report(report, "html", d / f"{name}.html"), report)
    return paths


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        yield ctx
        ctx.close()


class Page:
    """A page with every console error, page error, dialog and request recorded."""

    def __init__(self, context, path: Path):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("websocket", lambda w: self.requests.append(w.url))
        self.url = path.resolve().as_uri()
        # Nothing but the page itself may load; anything else is recorded above and aborted.
        page.route("**/*", lambda r: r.continue_() if r.request.url == self.url else r.abort())
        page.goto(self.url, wait_until="load")

    def plots(self) -> list[dict]:
        return self.page.evaluate("""() => [...document.querySelectorAll('div.plot')].map(d => ({
            id: d.id, svg: d.querySelectorAll('svg.main-svg').length,
            traces: d.querySelectorAll('.scatterlayer .trace').length,
            title: (d.querySelector('.gtitle') || {}).textContent || ''}))""")

    def outside_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"report-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_known_study_renders_offline_with_every_chart(context, reports):
    path, report = reports["known"]
    p = Page(context, path)
    p.page.wait_for_function("() => [...document.querySelectorAll('div.plot')]"
                             ".every(d => d.querySelector('svg.main-svg .scatterlayer .trace'))",
                             timeout=60_000)
    plots = p.plots()
    # One per factor, one per learning-curve metric, and accuracy against FLOPs.
    assert len(plots) == len(report.factors) + 2 + 1
    assert all(pl["svg"] >= 1 and pl["traces"] >= 1 for pl in plots), plots
    titles = " | ".join(pl["title"] for pl in plots)
    for text in ("best val acc by wavelet", "best val acc by model_size", "val acc per epoch",
                 "train loss per epoch", "test acc against cost"):
        assert text in titles
    assert p.errors == []
    assert p.outside_requests() == []
    status = p.page.inner_text("#status")
    assert status.startswith("In progress: 17 of 20 trials complete")
    assert "<b>for tests</b>" in p.page.inner_text("header")  # shown as text, not markup
    shot = _screenshot(p.page, "known")
    assert shot.stat().st_size > 50_000


def test_tables_sort_when_a_header_is_clicked(context, reports):
    path, report = reports["known"]
    p = Page(context, path)
    header = p.page.locator("#comparison th", has_text="best val acc (mean")
    column = 1 + len(report.factors) + 2  # Model, the factors, Seeds, then the objective

    def first_value() -> float:
        cell = p.page.locator(f"#comparison tbody tr:first-child td:nth-child({column})")
        return float(cell.get_attribute("data-v"))

    values = list(report.configs["obj_mean"].dropna())
    header.click()
    assert first_value() == pytest.approx(min(values))
    header.click()
    assert first_value() == pytest.approx(max(values))
    assert p.errors == []


def test_in_progress_sweep_escapes_text_and_draws(context, reports):
    path, report = reports["sweep"]
    p = Page(context, path)
    p.page.wait_for_function("() => [...document.querySelectorAll('div.plot')]"
                             ".every(d => d.querySelector('svg.main-svg .scatterlayer .trace'))",
                             timeout=60_000)
    assert p.page.evaluate("() => window.__pwned") is None  # the description did not run
    assert "window.__pwned = 1" in p.page.inner_text("header")
    assert len(p.plots()) == len(report.factors) + 1  # no MLflow runs: factors and FLOPs only
    assert "no trial recorded an MLflow run" in p.page.inner_text("body")
    assert p.page.locator("#fail tbody tr").count() == int((report.trials["state"] == "FAIL").sum())
    assert p.page.locator("#running tbody tr").count() == 4
    assert p.errors == [] and p.outside_requests() == []
    _screenshot(p.page, "sweep")


def test_empty_study_is_an_honest_page(context, reports):
    path, _ = reports["empty"]
    p = Page(context, path)
    status = p.page.inner_text("#status")
    assert status == "This study has no trials yet: there is nothing to report."
    assert p.plots() == []
    assert p.errors == [] and p.outside_requests() == []
    _screenshot(p.page, "empty")
