"""The page is self-contained, offline, and shows every study string as text."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgetune.reports.html import render
from edgetune.search.record import MEASUREMENT
from edgetune.search.study import Location

from studies import DYNAMIC, STRUCTURED, failed, killed, retry_of, study_of, trial

HOSTILE = "<img src=x onerror=alert(1)>"


class Page(HTMLParser):
    """Elements (with attributes) and the text a reader sees, outside scripts and styles."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        inside = self._open[-1] if self._open else ""
        (self.scripts if inside == "script" else self.text).append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    config = {"study": "synthetic", "task": {"model": HOSTILE}, "target": {"threads": 2},
              "search": {"constraints": {"max_latency_ms": 6.0}}}
    study = study_of([
        trial(0.97, 10.0, role="reference"),
        trial(0.96, 5.0, DYNAMIC),
        trial(0.90, 3.0, STRUCTURED, recipe_short=HOSTILE),
        failed("quantize", HOSTILE),
        killed(),
        retry_of(4, 0.5, 20.0),
    ], config=config)
    study.set_user_attr("data", {"labels": [HOSTILE, "sport"], "sizes": {"validation": 10}})
    run_dir = tmp_path_factory.mktemp("runs") / f"run {HOSTILE}"
    return Page(render(study, Location.resolve("synthetic", run_dir)))


def test_study_strings_show_as_text_and_never_become_elements(page: Page) -> None:
    assert page.tags("img") == []
    text = "".join(page.text)
    # the label, the config value, the recipe, the failure and the run folder in export commands
    assert text.count(HOSTILE) >= 5


def test_the_page_loads_nothing_from_anywhere(page: Page) -> None:
    assert page.tags("link") == [] and page.tags("iframe") == []
    for tag, attrs in page.elements:
        for name in ("src", "href"):
            assert attrs.get(name) is None, f"<{tag} {name}={attrs.get(name)}>"
    assert not any("@import" in s or "url(" in s for s in page.text if "{" in s)
    assert max(len(s) for s in page.scripts) > 1_000_000  # Plotly's own JavaScript, inlined


def test_the_front_table_has_a_row_and_an_export_command_per_front_trial(page: Page) -> None:
    assert len([a for a in page.tags("td") if a.get("class") == "text command"]) == 3
    text = "".join(page.text)
    assert text.count("edgetune export --run-dir") == 3  # trials 0, 1 and 2 make the front
    assert "--study synthetic --trial 2 --out export-trial-2" in text


def test_constraints_and_the_fp32_cost_are_spelled_out(page: Page) -> None:
    text = " ".join(" ".join(page.text).split())  # one space between cells
    # trials 1 (5 ms) and 2 (3 ms) are within 6 ms; trial 1 is the more accurate
    assert "most accurate within the constraints (≤ 6 ms) #1 dyn-int8 5.00 0.50× 96.00%" in text
    assert "96.00% -1.00 pt" in text  # trial 1 costs one point of accuracy against FP32


def test_failures_say_why_and_where_a_killed_trial_was_retried(page: Page) -> None:
    text = " ".join(" ".join(page.text).split())
    assert f"#3 fail quantize RuntimeError: {HOSTILE}" in text
    assert "#4 fail — its worker stopped mid-trial (killed, or lost its heartbeat); " \
           "retried as trial #5" in text


def test_a_study_with_no_trials_still_renders(tmp_path: Path) -> None:
    text = "".join(Page(render(study_of([]), Location.resolve("empty", tmp_path))).text)
    assert "No complete trial yet" in text


def test_a_study_on_another_metric_names_it_and_shows_the_fronts_confusion_matrices() -> None:
    trials = [trial(0.50, 10.0, role="reference"), trial(1.0, 5.0, DYNAMIC),
              trial(0.0, 3.0, STRUCTURED)]
    for record, counts in zip(trials, ([[8, 0], [1, 1]], [[7, 1], [0, 2]], [[8, 0], [2, 0]]),
                              strict=True):
        record.user_attrs[MEASUREMENT]["confusion"] = counts
    study = study_of(trials, config={"study": "synthetic", "target": {"threads": 2},
                                     "search": {"constraints": {"max_accuracy_drop": 0.5}}})
    study.set_metric_names(["recall_defect", "latency_ms"])
    study.set_user_attr("data", {"labels": [HOSTILE, "defect"], "sizes": {"validation": 10}})
    shown = Page(render(study, Location.resolve("synthetic", Path("run"))))
    text = " ".join(" ".join(shown.text).split())
    assert "validation recall_defect" in text and "validation accuracy" not in text
    assert "best recall_defect within the constraints (≥ 0.00% recall_defect)" in text
    tables = {attrs["id"] for attrs in shown.tags("table") if attrs.get("id", "")
              .startswith("confusion-")}
    assert tables == {"confusion-1-validation", "confusion-2-validation"}  # the front's only
    assert f"#1 dyn-int8: validation true \\ predicted {HOSTILE} defect {HOSTILE} 7 1 defect 0 2" \
        in text
