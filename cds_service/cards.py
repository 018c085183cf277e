"""Turn trial results into CDS Hooks 2.0 cards, with the texts and templates kept in `cards/`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from cds_service.catalog import ServiceDefinition
from cds_service.verdicts import NO_TREATMENT_HISTORY, CriterionResult, Outcome, TrialResult, Verdict

ELIGIBILITY_EXTENSION = "org.trialmatch.eligibility"
SUMMARY_LIMIT = 139  # CDS Hooks: summary < 140 characters
CARD_HOOK = "patient-view"  # the hook whose service shows trial cards: its title is the cards' source label

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


def shorten(text: str, limit: int) -> str:
    """Cut long text at a word boundary, marking the cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rsplit(" ", 1)[0] + "…"


def first_clauses(reason: str, limit: int) -> str:
    """Cut a reason that is longer than `limit` after its last "; "-separated clause that fits (the engine
    writes the decisive clause first), marking the cut; a first clause too long is cut at a word."""
    if len(reason) <= limit:
        return reason
    clauses = reason.split("; ")
    kept = clauses[0]
    for clause in clauses[1:]:
        if len(kept) + 2 + len(clause) > limit - 2:
            break
        kept = f"{kept}; {clause}"
    return shorten(kept, limit - 2) + " …"


_EMPTY = (None, "", [], {})
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n")  # two or more blank lines (left by template sections not shown)
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


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


def load_card_texts(cards_dir: Path) -> dict[str, Any]:
    """The fixed texts of the cards folder (card.yaml): labels, limits, override reasons."""
    texts: dict[str, Any] = yaml.safe_load((cards_dir / "card.yaml").read_text(encoding="utf-8"))
    return texts


def outcome_label(texts: Mapping[str, Any], criterion_type: str, outcome: str) -> str:
    """How a criterion's outcome reads for its type: an exclusion that does not apply is "Not excluded"."""
    labels = texts["outcome_labels"]
    return str(labels.get(criterion_type, labels["inclusion"])[outcome])


@dataclass(frozen=True)
class CardContext:
    """What a card needs beyond the trial result: who it is for and what could not be read."""

    patient_id: str | None
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class DetailLimits:
    """How much of a trial result the card's detail shows (card.yaml `detail`)."""

    max_chars: int
    facts: int
    to_check: int
    line_chars: int
    heading_chars: int
    fact_evidence: frozenset[str]

    def tighter(self) -> Iterator[DetailLimits]:
        """These limits, then shorter lines, then fewer items: the renderings tried until one fits."""
        yield self
        for line_chars in (150, 110, 80, 60):
            if line_chars < self.line_chars:
                yield dataclasses.replace(self, line_chars=line_chars)
        for items in (3, 1, 0):
            yield dataclasses.replace(
                self,
                line_chars=min(60, self.line_chars),
                facts=min(items, self.facts),
                to_check=min(items, self.to_check),
            )


@dataclass(frozen=True)
class Line:
    """One line of a card's detail: a criterion's reason, or the criteria under one registry heading."""

    text: str  # the reason, cut to fit; for a group, the heading
    exclusion: bool = False
    criteria: int = 1  # criteria this line stands for (a group: all under its heading with its outcome)
    of: int = 1  # a group: the trial's criteria under its heading, whatever their outcome
    dates: tuple[str, ...] = ()  # a group: the first and the last date its reasons name
    example: str = ""  # a group to check: the first clause of its first reason, cut to fit

    @property
    def group(self) -> bool:
        return self.criteria > 1


def detail_lines(
    selected: Sequence[CriterionResult], criteria: Sequence[CriterionResult], limits: DetailLimits
) -> list[Line]:
    """One line per selected criterion, in registry order; selected criteria of one type under one heading
    make a single line where the first of them stands."""
    selected_under: dict[tuple[str, str], list[CriterionResult]] = {}
    for criterion in selected:
        if criterion.heading:
            selected_under.setdefault((criterion.type, criterion.heading), []).append(criterion)
    lines: list[Line] = []
    for criterion in selected:
        key = (criterion.type, criterion.heading or "")
        members = selected_under.get(key, [])
        if len(members) > 1:
            if criterion is members[0]:
                lines.append(_group_line(key, members, criteria, limits))
            continue
        lines.append(
            Line(first_clauses(criterion.reason, limits.line_chars), exclusion=criterion.type == "exclusion")
        )
    return lines


def _group_line(
    key: tuple[str, str],
    members: list[CriterionResult],
    criteria: Sequence[CriterionResult],
    limits: DetailLimits,
) -> Line:
    """The line of the selected criteria under one heading: how many of the heading's criteria have their
    outcome (all of them, not only the selected ones), and the dates the selected ones name."""
    kind, heading = key
    under = [c for c in criteria if (c.type, c.heading) == key]
    dates = sorted({d for c in members for d in _ISO_DATE.findall(c.reason)})
    return Line(
        text=shorten(heading.rstrip(":"), limits.heading_chars),
        exclusion=kind == "exclusion",
        criteria=sum(c.outcome is members[0].outcome for c in under),
        of=len(under),
        dates=(dates[0], dates[-1]) if dates else (),
        example=shorten(members[0].reason.split("; ")[0], limits.line_chars),
    )


def is_fact(criterion: CriterionResult, evidence_types: frozenset[str]) -> bool:
    """A met inclusion criterion decided from measurements or treatments only (card.yaml `fact_evidence`)."""
    return (
        criterion.type == "inclusion"
        and criterion.outcome is Outcome.MET
        and bool(criterion.evidence)
        and all(ref.partition("/")[0] in evidence_types for ref in criterion.evidence)
    )


def source_label_of(services: Sequence[ServiceDefinition]) -> str | None:
    """The title of the service that shows trial cards, if the catalog lists one."""
    return next((s.title for s in services if s.hook == CARD_HOOK), None)


class CardBuilder:
    """Build contract-shaped cards from `TrialResult`s using the texts in a cards folder.

    The cards' source label is the title of the catalog's patient-view service (`services`), else card.yaml's.
    """

    def __init__(
        self,
        cards_dir: Path,
        uuid_factory: Callable[[], str],
        services: Sequence[ServiceDefinition] = (),
    ) -> None:
        self._texts = load_card_texts(cards_dir)
        detail = self._texts["detail"]
        self._limits = DetailLimits(
            max_chars=detail["max_chars"],
            facts=detail["facts"],
            to_check=detail["to_check"],
            line_chars=detail["line_chars"],
            heading_chars=detail["heading_chars"],
            fact_evidence=frozenset(detail["fact_evidence"]),
        )
        self._source_label = source_label_of(services) or self._texts["source_label"]
        self._override_reasons = [
            {"system": r["system"], "code": r["code"], "display": r["display"]}
            for r in self._texts["override_reasons"]
        ]
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(cards_dir)),
            autoescape=False,  # Markdown, escaped explicitly with the `md` filter
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )
        env.filters["md"] = markdown_escape
        self._summary = env.get_template("summary.txt.j2")
        self._detail = env.get_template("detail.md.j2")
        self._uuid = uuid_factory

    @property
    def source_label(self) -> str:
        """The label of every card's source: the patient-view service's title, else card.yaml's."""
        return str(self._source_label)

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
        to_check = sum(c.outcome is Outcome.UNKNOWN for c in result.criteria)
        topic = self._texts["topic"]
        card = {
            "uuid": self._uuid(),
            "summary": self._summary_text(likely, to_check, info.short_title, nct_id),
            "indicator": "info",
            "source": {
                "label": self.source_label,
                "topic": {
                    "system": topic["system"],
                    "code": nct_id,
                    "display": topic["display"].format(nct_id=nct_id),
                },
            },
            "detail": self._detail_text(result, context),
            "links": [
                {
                    "label": self._texts["link_label"].format(nct_id=nct_id),
                    "url": self._texts["link_url"].format(nct_id=nct_id),
                    "type": "absolute",
                }
            ],
            "suggestions": [self.referral(result, context, self._texts["referral"]["label"])],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [dict(reason) for reason in self._override_reasons],
        }
        card = drop_empty(card)
        card["extension"] = {ELIGIBILITY_EXTENSION: eligibility_extension(result)}  # already without empties
        return card

    def _summary_text(self, likely: bool, to_check: int, short_title: str, nct_id: str) -> str:
        values = {"likely": likely, "to_check": to_check, "nct_id": nct_id}
        text = self._summary.render(short_title=short_title, **values).strip()
        overflow = len(text) - SUMMARY_LIMIT
        if overflow > 0:
            cut = short_title[: max(len(short_title) - overflow - 1, 8)].rstrip() + "…"
            text = self._summary.render(short_title=cut, **values).strip()
        return text

    def _detail_text(self, result: TrialResult, context: CardContext) -> str:
        """The result told short: cohort, what to check, key facts, one line of counts (the first rendering
        that fits the limits)."""
        criteria = result.criteria
        unknown = [c for c in criteria if c.outcome is Outcome.UNKNOWN]
        facts = [c for c in criteria if is_fact(c, self._limits.fact_evidence)]
        info = result.trial
        values = {
            "arm": result.arm,
            "notes": list(context.notes),
            "to_check_count": len(unknown),
            "met": sum(c.outcome is Outcome.MET and c.type == "inclusion" for c in criteria),
            "not_excluded": sum(c.outcome is Outcome.MET and c.type == "exclusion" for c in criteria),
            "clinician": sum(c.outcome is Outcome.CLINICIAN for c in criteria),
            "no_history": any(c.reason.startswith(NO_TREATMENT_HISTORY) for c in unknown),
            "status_text": STATUS_TEXT.get(info.status, info.status.replace("_", " ").capitalize()),
            "phase": PHASE_TEXT.get(info.phase or "", info.phase),
        }
        text = ""
        for limits in self._limits.tighter():
            check_lines = detail_lines(unknown, criteria, limits)
            shown = check_lines[: limits.to_check]
            text = self._detail.render(
                to_check=shown,
                more_to_check=len(unknown) - sum(line.criteria for line in shown),
                facts=detail_lines(facts, criteria, limits)[: limits.facts],
                **values,
            )
            text = _BLANK_LINES.sub("\n\n", text).strip()
            if len(text) <= limits.max_chars:
                break
        if len(text) > self._limits.max_chars:  # long notes or cohort: cut, keeping the Markdown lines
            text = text[: self._limits.max_chars - 1].rstrip() + "…"
        return text

    def referral(self, result: TrialResult, context: CardContext, label: str) -> dict[str, Any]:
        """The suggestion `label` that drafts a referral ServiceRequest to the trial's team."""
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
            "label": label,
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
