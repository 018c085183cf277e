"""The sandbox page in a real browser: Debian's chromium driven by Playwright (no browser download).

A real server thread on 127.0.0.1 (sandbox mode, a temporary database, today fixed) serves the page; the
tests pick a gallery patient that fits a trial, fire patient-view, read the cards (likely and possibly look
different), open the criteria drill-down (outcomes as they read for their type, evidence labelled from the
chart sent, sortable by outcome), dismiss a card with a reason and find that feedback in the database, and
evaluate the gallery on another day than the one it was written for. `tests/browser/ensure-chromium.sh`
installs chromium.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
GALLERY_DAY = "2026-11-21"  # the day the gallery's charts are written for (their Bundle timestamp)
LATER_DAY = "2027-03-01"  # the service's today in the test of another day: the gallery's labs are then stale
OUTCOMES = {
    "inclusion": {"Met", "Not met", "To check", "For the clinician"},
    "exclusion": {"Not excluded", "Excluded", "To check", "For the clinician"},
}


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
def serve(tmp_path: Path, clean_cds_env: None) -> Iterator[Callable[[str], tuple[str, Flask]]]:
    """Start the service on a free port of 127.0.0.1 with a given today, in a server thread, until the test
    ends."""
    started: list[tuple[Any, threading.Thread, Flask]] = []

    def start(today: str) -> tuple[str, Flask]:
        database = tmp_path / f"sandbox-{len(started)}.sqlite3"
        app = create_app({"SANDBOX": True, "TODAY": today, "DATABASE_URL": f"sqlite:///{database}"})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread, app))
        return f"http://127.0.0.1:{server.server_port}", app

    yield start
    for server, thread, app in started:
        server.shutdown()
        thread.join()
        app.extensions["cds"].storage.close()


@pytest.fixture
def served_app(serve: Callable[[str], tuple[str, Flask]]) -> tuple[str, Flask]:
    """The service whose today is the day the gallery is written for."""
    return serve(GALLERY_DAY)


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
    by_type: dict[str, set[str]] = {"inclusion": set(), "exclusion": set()}
    for i in range(rows.count()):
        kind, outcome = (rows.nth(i).locator("td").nth(n).inner_text() for n in (0, 2))
        by_type[kind].add(outcome)
    assert by_type["inclusion"] <= OUTCOMES["inclusion"] and "Met" in by_type["inclusion"]
    assert by_type["exclusion"] <= OUTCOMES["exclusion"] and "Not excluded" in by_type["exclusion"]
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


def test_likely_and_possibly_cards_look_different(
    browser_page: BrowserPage, served_app: tuple[str, Flask]
) -> None:
    base_url, _ = served_app
    page = browser_page.page
    show_cards(page, base_url, fitting_patient())
    likely, possibly = page.locator("article.card-likely").first, page.locator("article.card-possibly").first
    expect(likely.locator(".verdict")).to_have_text("Likely eligible")
    expect(possibly.locator(".verdict")).to_have_text("Possibly eligible")
    expect(likely.locator(".summary")).to_contain_text("Likely eligible: ")
    expect(possibly.locator(".summary")).to_contain_text("to check: ")
    style = "(n) => [getComputedStyle(n).borderLeftStyle, getComputedStyle(n).backgroundColor]"
    assert likely.evaluate(style) != possibly.evaluate(style)
    assert [likely.evaluate(style)[0], possibly.evaluate(style)[0]] == ["solid", "dashed"]
    expect(possibly.locator(".detail")).to_contain_text("To check")
    expect(likely.locator(".detail")).not_to_contain_text("To check")
    assert browser_page.errors == []


def test_a_card_fits_one_screen_at_half_a_laptop_width(
    browser: Browser, served_app: tuple[str, Flask]
) -> None:
    """The NCT06903312 card of the gallery, as the README shows it (docs/card-nct06903312.png is this
    test's test-artifacts/card-nct06903312.png)."""
    base_url, _ = served_app
    context = browser.new_context(viewport={"width": 720, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        show_cards(page, base_url, fitting_patient())
        card = page.locator("article.card", has_text="NCT06903312").first
        card.scroll_into_view_if_needed()
        box = card.bounding_box()
        assert box is not None and box["height"] <= 900 and box["width"] <= 720
        ARTIFACTS.mkdir(exist_ok=True)
        card.screenshot(path=str(ARTIFACTS / "card-nct06903312.png"))
    finally:
        context.close()


def test_evidence_is_labelled_from_the_chart_and_criteria_sort_by_outcome(
    browser_page: BrowserPage, served_app: tuple[str, Flask]
) -> None:
    base_url, _ = served_app
    page = browser_page.page
    show_cards(page, base_url, fitting_patient())
    request = page.evaluate("JSON.parse(document.getElementById('request-json').textContent)")
    sent = {
        f"{r['resourceType']}/{r['id']}": r
        for value in request["prefetch"].values()
        if value
        for r in ([e["resource"] for e in value["entry"]] if value["resourceType"] == "Bundle" else [value])
    }
    likely = page.locator("article.card-likely").first
    likely.locator("details.criteria summary").click()
    evidence = likely.locator("details.criteria .evidence")
    assert evidence.count() > 10
    types = set()
    for i in range(evidence.count()):
        reference, label = evidence.nth(i).get_attribute("title"), evidence.nth(i).inner_text()
        resource = sent[reference]  # the id is on hover, and it names a resource of the chart sent
        types.add(resource["resourceType"])
        assert reference not in label and label.startswith(resource["resourceType"])
        if resource["resourceType"] == "Observation":
            assert (resource.get("effectiveDateTime") or resource["issued"])[:10] in label
    assert {"Patient", "Condition", "Observation", "MedicationRequest"} <= types
    ecog = likely.locator(".evidence", has_text="ECOG").first.inner_text()
    assert ecog.startswith("Observation · ECOG") and " · 1 · " in ecog  # type, what, value, date

    card = page.locator("article.card-possibly").first
    card.locator("details.criteria summary").click()
    rows = card.locator("details.criteria tbody tr")
    registry = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]
    card.get_by_role("button", name="Outcome").click()
    expect(card.locator("th[aria-sort=ascending]")).to_have_count(1)
    outcomes = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
    rank = {"To check": 0, "Not met": 1, "Excluded": 1, "For the clinician": 2, "Met": 3, "Not excluded": 3}
    assert [rank[o] for o in outcomes] == sorted(rank[o] for o in outcomes) and outcomes[0] == "To check"
    card.get_by_role("button", name="Outcome").click()
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())] == registry
    assert browser_page.errors == []


def test_the_gallery_gives_its_verdicts_on_another_day_and_the_date_can_be_set(
    browser_page: BrowserPage, serve: Callable[[str], tuple[str, Flask]]
) -> None:
    """On a later day the page evaluates a gallery chart as of the day it was written for (it moves the
    chart's dates); set to the service's own day, the chart's labs are stale and the verdict changes."""
    base_url, _ = serve(LATER_DAY)
    page = browser_page.page
    patient = fitting_patient()
    show_cards(page, base_url, patient)
    date = page.get_by_label("Evaluation date")
    expect(date).to_have_value(GALLERY_DAY)
    expect(page.locator("#date-note")).to_contain_text(f"The service evaluates on {LATER_DAY}")
    expect(page.locator("#date-note")).to_contain_text("100 days later")
    expect(page.locator("#status")).to_contain_text(f"evaluated as of {GALLERY_DAY}")
    expected = manifest_verdicts(patient.file)
    assert card_verdicts(page) == {k: v for k, v in expected.items() if v in CARD_VERDICTS}

    date.fill(LATER_DAY)
    expect(page.locator("#date-note")).to_have_text(f"The service evaluates on its own date, {LATER_DAY}.")
    page.get_by_role("button", name="Fire patient-view").click()
    expect(page.locator("#status")).to_contain_text(f"evaluated as of {LATER_DAY}")
    stale = card_verdicts(page)
    assert stale and set(stale.values()) == {
        "possibly-eligible"
    }  # labs and ECOG of the chart are now too old
    assert browser_page.errors == []


def manifest_verdicts(file: str) -> dict[str, str]:
    manifest = yaml.safe_load(
        (DEFAULT_EXAMPLES_DIR / "patients" / "manifest.yaml").read_text(encoding="utf-8")
    )
    return next(entry["expected"] for entry in manifest if entry["file"] == file)


def card_verdicts(page: Page) -> dict[str, str]:
    """NCT number -> verdict of each card shown (from the response the page received)."""
    response = page.evaluate("JSON.parse(document.getElementById('response-json').textContent)")
    return {
        card["extension"]["org.trialmatch.eligibility"]["nctId"]: card["extension"][
            "org.trialmatch.eligibility"
        ]["verdict"]
        for card in response["cards"]
    }


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


def test_a_draft_order_that_ends_a_trial_is_warned_at_order_select_and_not_again_at_order_sign(
    browser_page: BrowserPage, served_app: tuple[str, Flask]
) -> None:
    base_url, app = served_app
    page = browser_page.page
    page.goto(f"{base_url}/sandbox")
    expect(page.locator("body.ready")).to_be_attached()
    page.get_by_label("Example patient").select_option("fit-namecar.json")
    expect(page.locator("#status")).to_contain_text("Loaded")
    page.get_by_label("Draft order").select_option("nephrectomy-cpt.json")
    expect(page.locator("#order-description")).to_contain_text("coded in CPT")

    page.get_by_role("button", name="Fire order-select").click()
    expect(page.locator("#status")).to_contain_text("order-select: 1 card returned")
    request = page.evaluate("JSON.parse(document.getElementById('request-json').textContent)")
    assert request["hook"] == "order-select"
    assert request["context"]["selections"] == ["ServiceRequest/draft-nephrectomy-cpt"]
    card = page.locator("article.card").first
    expect(card.locator(".indicator")).to_have_text("warning")
    expect(card.locator(".summary")).to_have_text(
        "Cytoreductive nephrectomy (laparoscopic radical) may end eligibility for NAMECAR (NCT06882486)"
    )
    expect(card.locator(".detail")).to_contain_text("With primary tumor still in place")
    card.locator("details.criteria summary").click()
    expect(card.locator(".impact li")).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    card.screenshot(path=str(ARTIFACTS / "order-warning.png"))

    page.get_by_role("button", name="Fire order-sign").click()  # the same order, the same day
    expect(page.locator("#status")).to_contain_text("order-sign: 0 cards returned")
    expect(page.locator("#cards")).to_contain_text("its warning was shown at order-select today")

    page.get_by_label("Draft order").select_option("cbc.json")
    page.get_by_role("button", name="Fire order-select").click()
    expect(page.locator("#status")).to_contain_text("order-select: 0 cards returned")
    expect(page.locator("#cards")).to_contain_text("this order ends no trial the patient may fit now")

    page.get_by_label("Draft order").select_option("nephrectomy-cpt.json")
    page.get_by_role("button", name="Fire order-select").click()
    card = page.locator("article.card").first
    uuid = card.get_attribute("data-uuid")
    card.get_by_role("button", name="Remove the order").click()
    expect(card.locator(".answered-note")).to_contain_text("Suggestion accepted")
    (stored,) = app.extensions["cds"].storage.iter_feedback()
    assert (stored["card"], stored["outcome"]) == (uuid, "accepted")
    assert (stored["serviceId"], stored["nctId"]) == ("mrcc-trials-order-select", "NCT06882486")
    assert browser_page.errors == []
