"""Turn trial results into CDS Hooks 2.0 cards, with the texts and templates kept in `cards/`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from cds_service.verdicts import CriterionResult, Outcome, TrialResult, Verdict

ELIGIBILITY_EXTENSION = "org.trialmatch.eligibility"
SUMMARY_LIMIT = 139  # CDS Hooks: summary < 140 characters
TEXT_PREVIEW = 90  # characters of verbatim registry text shown beside a criterion to check

# Escaped one by one, the backslash first (the others add backslashes): a few str.replace calls beat a
# regular expression on these short texts.
_MARKDOWN_SPECIAL = "\\`*_{}[]<>#|"

STATUS_TEXT = {"RECRUITING": "Recruiting", "NOT_YET_RECRUITING": "Not yet recruiting"}
PHASE_TEXT = {"PHASE1": "Phase 1", "PHASE2": "Phase 2", "PHASE3": "Phase 3", "PHASE4": "Phase 4"}


def markdown_escape(text: str) -> str:
    """Escape characters that Markdown (or raw HTML in GFM renderers) would interpret."""
    for char in _MARKDOWN_SPECIAL:
        if char in text:
            text = text.replace(char, "\\" + char)
    return text


def shorten(text: str, limit: int = TEXT_PREVIEW) -> str:
    """Cut long registry text at a word boundary, marking the cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rsplit(" ", 1)[0] + "…"


_EMPTY = (None, "", [], {})
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n")  # two or more blank lines (left by template sections not shown)


def drop_empty(value: Any) -> Any:
    """Remove None, "", [] and {} recursively: CDS Hooks forbids them in cards."""
    kind = type(value)
    if kind is str:  # the usual cases first, by exact type (cheaper than isinstance)
        return value
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        cleaned = {}
        for key, item in value.items():
            item = drop_empty(item)
            if item not in _EMPTY:
                cleaned[key] = item
        return cleaned
    if isinstance(value, list | tuple):
        items = [drop_empty(item) for item in value]
        return [item for item in items if item not in _EMPTY]
    return value


@dataclass(frozen=True)
class CardContext:
    """What a card needs beyond the trial result: who it is for and what could not be read."""

    patient_id: str | None
    notes: Sequence[str] = ()
    lab_max_age_days: int = 30
    performance_max_age_days: int = 60


class CardBuilder:
    """Build contract-shaped cards from `TrialResult`s using the texts in a cards folder."""

    def __init__(self, cards_dir: Path, uuid_factory: Callable[[], str]) -> None:
        self._texts = yaml.safe_load((cards_dir / "card.yaml").read_text(encoding="utf-8"))
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(cards_dir)),
            autoescape=False,  # Markdown, escaped explicitly with the `md` filter
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )
        env.filters["md"] = markdown_escape
        env.filters["shorten"] = shorten
        self._summary = env.get_template("summary.txt.j2")
        self._detail = env.get_template("detail.md.j2")
        self._uuid = uuid_factory

    def build_all(self, results: Sequence[TrialResult], context: CardContext) -> list[dict[str, Any]]:
        """Cards of the results that get one, in order."""
        return [self.build(result, context) for result in results if result.gets_card]

    def build(self, result: TrialResult, context: CardContext) -> dict[str, Any]:
        """Return one card for a trial the patient may fit (verdict likely- or possibly-eligible)."""
        if not result.gets_card or result.trial.nct_id is None:
            raise ValueError(f"trial {result.trial.key} does not get a card ({result.verdict})")
        info = result.trial
        nct_id = info.nct_id
        likely = result.verdict is Verdict.LIKELY
        reasons = self._texts["override_reasons"]
        card = {
            "uuid": self._uuid(),
            "summary": self._summary_text(likely, info.short_title, nct_id),
            "indicator": "info",
            "source": {"label": self._texts["source_label"]},
            "detail": self._detail_text(result, context, likely),
            "links": [
                {
                    "label": self._texts["link_label"].format(nct_id=nct_id),
                    "url": self._texts["link_url"].format(nct_id=nct_id),
                    "type": "absolute",
                }
            ],
            "suggestions": [self._referral(result, context)],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [
                {"system": reasons["system"], "code": r["code"], "display": r["display"]}
                for r in reasons["reasons"]
            ],
        }
        card = drop_empty(card)
        card["extension"] = {ELIGIBILITY_EXTENSION: eligibility_extension(result)}  # already without empties
        return card

    def _summary_text(self, likely: bool, short_title: str, nct_id: str) -> str:
        text = self._summary.render(likely=likely, short_title=short_title, nct_id=nct_id).strip()
        overflow = len(text) - SUMMARY_LIMIT
        if overflow > 0:
            cut = short_title[: max(len(short_title) - overflow - 1, 8)].rstrip() + "…"
            text = self._summary.render(likely=likely, short_title=cut, nct_id=nct_id).strip()
        return text

    def _detail_text(self, result: TrialResult, context: CardContext, likely: bool) -> str:
        by_outcome: dict[Outcome, list[CriterionResult]] = {o: [] for o in Outcome}
        for criterion in result.criteria:
            by_outcome[criterion.outcome].append(criterion)
        info = result.trial
        text = self._detail.render(
            likely=likely,
            to_check=by_outcome[Outcome.UNKNOWN],
            met=[c for c in by_outcome[Outcome.MET] if c.type == "inclusion"],
            not_excluded=[c for c in by_outcome[Outcome.MET] if c.type == "exclusion"],
            clinician=by_outcome[Outcome.CLINICIAN],
            status_text=STATUS_TEXT.get(info.status, info.status.replace("_", " ").capitalize()),
            phase=PHASE_TEXT.get(info.phase or "", info.phase),
            sponsor=info.sponsor,
            arm=result.arm,
            notes=list(context.notes),
            lab_days=context.lab_max_age_days,
            performance_days=context.performance_max_age_days,
            catalog_version=result.catalog_version,
        )
        return _BLANK_LINES.sub("\n\n", text).strip()

    def _referral(self, result: TrialResult, context: CardContext) -> dict[str, Any]:
        info = result.trial
        referral = self._texts["referral"]
        description = referral["description"].format(nct_id=info.nct_id)
        service_request = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "code": {"coding": [dict(referral["code"])], "text": f"Referral to the {info.nct_id} trial team"},
            "subject": {"reference": f"Patient/{context.patient_id}"} if context.patient_id else None,
            "reasonCode": [
                {"text": f"Possible eligibility for {info.title} ({info.nct_id}): {result.verdict}"}
            ],
            "note": [{"text": f"Trial: {info.url}" if info.url else None}],
        }
        return {
            "label": referral["label"],
            "uuid": self._uuid(),
            "actions": [{"type": "create", "description": description, "resource": service_request}],
        }


def eligibility_extension(result: TrialResult) -> dict[str, Any]:
    """The machine-readable `org.trialmatch.eligibility` object of the contract (no empty values)."""
    info = result.trial
    extension = {
        "nctId": info.nct_id,
        "recruitmentStatus": info.status,
        "verdict": str(result.verdict),
        "catalogVersion": result.catalog_version,
        "arm": result.arm,
        "criteria": [_criterion_entry(c) for c in result.criteria],
    }
    return {k: v for k, v in extension.items() if v not in _EMPTY}


def _criterion_entry(c: CriterionResult) -> dict[str, Any]:
    """One criterion of the extension without empty values: strings, None or a list, so empty is falsy."""
    entry: dict[str, Any] = {}
    for key, value in (
        ("id", c.id),
        ("type", c.type),
        ("text", c.text),
        ("heading", c.heading),
        ("outcome", str(c.outcome)),
        ("reason", c.reason),
        ("evidence", [ref for ref in c.evidence if ref]),
    ):
        if value:
            entry[key] = value
    return entry
