"""The sandbox page in a real browser: Debian's chromium driven by Playwright (no browser download).

A real server thread on 127.0.0.1 (sandbox mode, a temporary database, today fixed) serves the page; the
test picks a gallery patient that fits a trial, fires patient-view, opens the criteria drill-down, dismisses
the card with a reason, and finds that feedback in the database. `tests/browser/ensure-chromium.sh`
installs chromium.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from flask import Flask
from playwright.sync_api import Browser, Page, expect, sync_playwright
from werkzeug.serving import make_server

from cds_service.config import DEFAULT_EXAMPLES_DIR
from cds_service.web import create_app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CARD_VERDICTS = {"likely-eligible", "possibly-eligible"}
TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class GalleryPatient:
    file: str
    title: str
    expected_cards: frozenset[str]  # trial keys the manifest expects a card for


def fitting_patient() -> GalleryPatient:
    """The first patient of the bundled gallery whose manifest expects at least one trial card."""
    manifest = yaml.safe_load(
        (DEFAULT_EXAMPLES_DIR / "patients" / "manifest.yaml").read_text(encoding="utf-8")
    )
    for entry in manifest:
        expected = frozenset(
            key for key, verdict in (entry.get("expected") or {}).items() if verdict in CARD_VERDICTS
        )
        if expected:
            return GalleryPatient(entry["file"], entry.get("title") or entry["file"], expected)
    raise AssertionError("the example gallery has no patient that fits a trial")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run tests/browser/ensure-chromium.sh"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def served_app(tmp_path: Path, clean_cds_env: None) -> Iterator[tuple[str, Flask]]:
    """The service on a free port of 127.0.0.1, in a server thread, until the test ends."""
    app = create_app(
        {"SANDBOX": True, "TODAY": "2026-11-21", "DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.sqlite3'}"}
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join()
        app.extensions["cds"].storage.close()


@dataclass
class BrowserPage:
    page: Page
    errors: list[str]  # script errors and console errors (blocked content, failed loads)


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[BrowserPage]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield BrowserPage(page, errors)
    context.close()


def show_cards(page: Page, base_url: str, patient: GalleryPatient) -> None:
    """Open the sandbox, pick the gallery patient and fire patient-view."""
    page.goto(f"{base_url}/sandbox")
    expect(page.locator("body.ready")).to_be_attached()
    page.get_by_label("Example patient").select_option(patient.file)
    expect(page.locator("#status")).to_contain_text("Loaded")
    expect(page.get_by_label("FHIR Bundle", exact=False)).not_to_have_value("")
    page.get_by_role("button", name="Fire patient-view").click()
    expect(page.locator("#status")).to_contain_text("returned")


def test_pick_a_patient_see_its_cards_drill_down_and_dismiss(
    browser_page: BrowserPage, served_app: tuple[str, Flask]
) -> None:
    base_url, app = served_app
    page = browser_page.page
    patient = fitting_patient()
    show_cards(page, base_url, patient)

    cards = page.locator("article.card")
    summaries = [cards.nth(i).locator(".summary").inner_text() for i in range(cards.count())]
    assert {
        key for key in patient.expected_cards if any(key in s for s in summaries)
    } == patient.expected_cards
    key = sorted(patient.expected_cards)[0]
    card = page.locator("article.card", has_text=key).first
    expect(card.locator(".indicator")).to_have_text("info")
    expect(card.get_by_role("link", name="ClinicalTrials.gov", exact=False)).to_have_attribute(
        "href", f"https://clinicaltrials.gov/study/{key}"
    )
    expect(card.locator(".detail")).not_to_be_empty()

    card.locator("details.criteria summary").click()
    rows = card.locator("details.criteria tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() > 5
    outcomes = {rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())}
    assert outcomes <= {"Met", "Not met", "Unknown", "Clinician"} and "Met" in outcomes
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sandbox.png"), full_page=True)

    uuid = card.get_attribute("data-uuid")
    reason_select = card.get_by_label("Reason")
    reasons = reason_select.locator("option")
    assert reasons.count() >= 2, "the card offers override reasons"
    chosen = reasons.nth(1).inner_text()
    reason_select.select_option(label=chosen)
    card.get_by_label("Comment (optional)").fill("seen in clinic")
    card.get_by_role("button", name="Dismiss").click()
    expect(card.locator(".answered-note")).to_contain_text("feedback sent")

    stored = list(app.extensions["cds"].storage.iter_feedback())
    assert len(stored) == 1
    assert stored[0]["card"] == uuid
    assert stored[0]["outcome"] == "overridden"
    assert stored[0]["reason"]["display"] == chosen
    assert stored[0]["comment"] == "seen in clinic"
    assert stored[0]["nctId"] == key
    assert browser_page.errors == []


def test_a_suggestion_click_sends_accepted_feedback(
    browser_page: BrowserPage, served_app: tuple[str, Flask]
) -> None:
    base_url, app = served_app
    page = browser_page.page
    show_cards(page, base_url, fitting_patient())
    card = page.locator("article.card").first
    suggestion = card.locator("button.suggestion").first
    label = suggestion.inner_text()
    uuid = card.get_attribute("data-uuid")
    suggestion.click()
    expect(card.locator(".answered-note")).to_contain_text("Suggestion accepted")
    expect(card.get_by_role("button", name="Dismiss")).to_have_count(0)

    stored = list(app.extensions["cds"].storage.iter_feedback())
    assert [(item["card"], item["outcome"]) for item in stored] == [(uuid, "accepted")]
    response = page.evaluate("JSON.parse(document.getElementById('response-json').textContent)")
    card_json = next(c for c in response["cards"] if c["uuid"] == uuid)
    suggestion_json = next(s for s in card_json["suggestions"] if s["label"] == label)
    assert stored[0]["acceptedSuggestions"] == [suggestion_json["uuid"]]
    assert browser_page.errors == []


def test_card_markdown_is_sanitized(browser_page: BrowserPage, served_app: tuple[str, Flask]) -> None:
    base_url, _ = served_app
    page = browser_page.page
    page.goto(f"{base_url}/sandbox")
    expect(page.locator("body.ready")).to_be_attached()
    html = page.evaluate(
        """async (url) => (await import(url)).safeMarkdown("**bold** <img src=x onerror=alert(1)> "
            + "<script>alert(2)</script> [a](javascript:alert(3)) [b](https://x.org)")""",
        f"{base_url}/static/cards.js",
    )
    assert "<strong>bold</strong>" in html
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert 'href="https://x.org"' in html and 'rel="noopener noreferrer"' in html
    # parsing hostile HTML may try its inline handler: the page's Content-Security-Policy blocks it
    assert all("violates the following Content Security Policy" in error for error in browser_page.errors)
