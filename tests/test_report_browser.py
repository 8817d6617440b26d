"""The report of a real study opens in headless Chromium with the network off, and works.

The study is the tiny one ``edgetune run`` made on data labelled ``<script>alert(1)</script>``;
a copy of it gets one more complete trial whose recipe text holds that label and the markup
Plotly itself interprets in texts (``<b>``), so hostile strings also reach a Plotly hover text.
The screenshot lands in tests/artifacts/report.png.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from selenium.webdriver.remote.webdriver import WebDriver

from edgetune.search.cli import cli
from edgetune.search.front import front_of, search_front

import browser
from conftest import HOSTILE_LABEL, HostileRun

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).parent / "artifacts"
HOSTILE_RECIPE = f"<b>bold</b> {HOSTILE_LABEL}"


@pytest.fixture(scope="module")
def report(hostile_run: HostileRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a copy of the hostile run, with a trial whose recipe text is hostile."""
    run_dir = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(hostile_run.folder / "run", run_dir, ignore=shutil.ignore_patterns("*.html"))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir}/study.db")
    last = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[-1]
    study.add_trial(optuna.trial.create_trial(
        values=[last.values[0] * 0.5, last.values[1] * 2],  # dominated: off the front
        user_attrs={**{k: v for k, v in last.user_attrs.items() if k != "confirmed"},
                    "recipe_short": HOSTILE_RECIPE}))
    out = run_dir / "report.html"
    result = CliRunner().invoke(cli, ["report", "--run-dir", str(run_dir), "--study", "tiny",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def page(report: Path) -> Iterator[WebDriver]:
    if reason := browser.missing():
        pytest.fail(reason)
    with browser.offline_chromium() as driver:
        browser.requested_urls(driver)  # forget the blank start page's own requests
        driver.get(report.as_uri())
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const wait = () => document.querySelector('#plot-pareto .scatterlayer .trace')"
            " ? done() : setTimeout(wait, 50); wait();")
        yield driver


@pytest.fixture(scope="module")
def study(report: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{report.parent}/study.db")


def test_the_page_logs_no_console_error(page: WebDriver) -> None:
    errors = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_the_page_requests_nothing_but_its_own_file(page: WebDriver, report: Path) -> None:
    urls = browser.requested_urls(page)
    assert report.as_uri() in urls
    assert [url for url in urls if not url.startswith(("file:", "data:", "blob:"))] == []


def test_the_pareto_plot_draws_a_point_per_complete_trial(page: WebDriver,
                                                          study: optuna.Study) -> None:
    complete = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    count_points = """
        const plot = document.getElementById('plot-pareto');
        return plot._fullData
          .filter(t => t.visible === true && t.meta && t.meta.kind === 'trial')
          .reduce((n, t) => n + plot.querySelectorAll('.trace' + t.uid + ' path.point').length, 0);
    """
    assert page.execute_script(count_points) == complete
    # The other view (colour by pruning method) shows the same trials.
    page.execute_script(
        "const plot = document.getElementById('plot-pareto');"
        "return Plotly.restyle(plot, plot.layout.updatemenus[0].buttons[1].args[0]);")
    assert page.execute_script(count_points) == complete
    page.execute_script(
        "const plot = document.getElementById('plot-pareto');"
        "return Plotly.restyle(plot, plot.layout.updatemenus[0].buttons[0].args[0]);")


def test_the_front_table_has_a_row_per_front_trial(page: WebDriver, study: optuna.Study) -> None:
    """The confirmed front, and the search's front trials that confirmation moved off it."""
    rows = page.execute_script("return document.querySelectorAll('#front-table tbody tr').length")
    shown = {t.number for t in search_front(study)} | {t.number for t in front_of(study)}
    assert rows == len(shown) > 0


def test_the_front_table_sorts_by_a_clicked_column(page: WebDriver) -> None:
    column = "return Array.from(document.querySelectorAll('#front-table tbody tr'))" \
             ".map(r => parseFloat(r.cells[5].dataset.sort))"
    header = page.find_element("css selector", "#front-table th:nth-child(6)")
    header.click()
    ascending = page.execute_script(column)
    header.click()
    assert ascending == sorted(ascending) and page.execute_script(column) == ascending[::-1]


def test_a_hostile_label_stays_text_in_the_page_and_in_hover(page: WebDriver) -> None:
    labels = page.execute_script("return document.getElementById('labels').textContent")
    assert HOSTILE_LABEL in labels
    hover = page.execute_script("""
        const plot = document.getElementById('plot-pareto');
        const curve = plot._fullData.findIndex(t => t.visible === true && t.meta
          && t.meta.kind === 'trial' && t.hovertext.some(h => h.includes('alert')));
        const point = plot._fullData[curve].hovertext.findIndex(h => h.includes('alert'));
        Plotly.Fx.hover(plot, [{curveNumber: curve, pointNumber: point}]);
        return plot.querySelector('.hoverlayer').textContent;
    """)
    assert HOSTILE_RECIPE in hover
    assert page.execute_script("return window.__dialogs") == []
    injected = page.execute_script(
        "return Array.from(document.scripts).filter(s => s.textContent.trim() === 'alert(1)')"
        ".length")
    assert injected == 0


def test_screenshot(page: WebDriver) -> None:
    path = browser.save_full_page(page, ARTIFACTS / "report.png")
    assert path.stat().st_size > 50_000
