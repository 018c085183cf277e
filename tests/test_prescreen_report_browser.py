"""The pre-screening report of the shipped example export, opened from disk in Debian's chromium: it needs no
network, shows each trial's counts and the criteria most often to check, and sorts its worklist on a click."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cds_service.config import DEFAULT_EXAMPLES_DIR
from tests.prescreen_support import run
from tests.test_sandbox_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run tests/browser/ensure-chromium.sh"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def column(page: Page, index: int) -> list[str]:
    return page.locator(f"#worklist tbody tr td:nth-child({index})").all_inner_texts()


def test_the_example_report_shows_the_screening_and_sorts_its_worklist(
    browser: Browser, tmp_path: Path
) -> None:
    summary = run(DEFAULT_EXAMPLES_DIR / "bulk", tmp_path)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url))

    page.goto((tmp_path / "report.html").as_uri())

    expect(page.locator("#screened")).to_have_text(str(summary["patients"]["screened"]))
    for nct_id, trial in summary["trials"].items():
        section = page.locator(f"#trial-{nct_id}")
        if not trial["recruiting"]:
            expect(section).to_contain_text("not recruiting")
            continue
        expect(section).to_contain_text(f"{trial['likely-eligible']} likely eligible")
        expect(section).to_contain_text(f"{trial['possibly-eligible']} possibly eligible")
        bars = section.locator("svg g.bar")
        expect(bars).to_have_count(min(10, len(trial["to_check"])))
        if trial["to_check"]:
            most = sorted(trial["to_check"].items(), key=lambda item: (-item[1], item[0]))[0]
            expect(bars.first).to_have_attribute("data-criterion", most[0])
            expect(bars.first).to_contain_text(str(most[1]))
    rows = page.locator("#worklist tbody tr")
    expect(rows).to_have_count(summary["worklist"]["rows"])
    assert column(page, 3)[0] == "likely-eligible"  # as worklist.csv: likely first

    page.get_by_role("button", name="verdict").click()
    page.get_by_role("button", name="verdict").click()
    verdicts = column(page, 3)
    assert verdicts[0] == "possibly-eligible" and verdicts == sorted(verdicts, reverse=True)
    page.get_by_role("button", name="nct_id").click()
    assert column(page, 2) == sorted(column(page, 2))
    expect(page.locator("th[aria-sort=ascending]")).to_have_text("nct_id")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prescreen-report.png"), full_page=True)
    page.close()
    assert errors == []
    assert requests == [(tmp_path / "report.html").as_uri()]  # nothing else is loaded: no network
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == summary
