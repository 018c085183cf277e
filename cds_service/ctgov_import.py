"""Turn a ClinicalTrials.gov API v2 study record into a draft trial mapping (mappings/trials/<id>.yaml).

The draft keeps the registry metadata and every eligibility criterion verbatim, split into list items. No
rule is guessed: every criterion is left to the clinician until a person encodes it. The schema requires
anchors (labelled rules of the trial's disease and stage); the draft has one whose rule is a `clinician` leaf,
which is never true, so a draft trial is never considered and never gets a card until a person encodes its
anchors (mappings/README.md, "Trials").

Raises CtgovImportError (cds_service.errors): the record lacks what a mapping needs, or its criteria cannot
be split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from cds_service.errors import CtgovImportError

TO_ENCODE = "not yet encoded: check against the registry text"
ANCHOR_TO_ENCODE = "not yet encoded: encode the trial's disease and stage before it can be considered"
SHORT_TITLE_MAX = 100

_SECTION = re.compile(
    r"^\s*(?:[#>]+\s*)?(?:\*\*|__)?\s*(?:key\s+|main\s+)?(?P<kind>inclusion|exclusion)\s+criteria\b[^:\n]*:?"
    r"\s*(?:\*\*|__)?\s*:?\s*$",
    re.IGNORECASE,
)
# "* item", "- item", "• item", "1. item", "1) item", "a. item", "11.1 item" (no dot needed after 11.1)
_ITEM = re.compile(r"^(?P<indent>\s*)(?:[*+\-•·]|\d+[.)]|[a-zA-Z][.)]|\d+(?:\.\d+)+\.?)\s+(?P<text>\S.*)$")
_MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~])")


@dataclass
class _Item:
    kind: str
    text: str
    indent: int
    children: list[_Item] = field(default_factory=list)


def _unescape(text: str) -> str:
    """Return markdown text as the registry displays it (API v2 escapes `<`, `>`, `[`...)."""
    return _MARKDOWN_ESCAPE.sub(r"\1", text).strip()


def _parse_items(markdown: str) -> list[_Item]:
    """Split eligibility markdown into top-level items (with nested children) of each section."""
    roots: list[_Item] = []
    stack: list[_Item] = []
    kind: str | None = None
    last: _Item | None = None
    for line in markdown.splitlines():
        if not line.strip():
            continue
        section = _SECTION.match(line)
        if section:
            kind, stack, last = section.group("kind").lower(), [], None
            continue
        if kind is None:
            continue  # text before the first section names no criterion type
        match = _ITEM.match(line.expandtabs(4))
        if match is None:
            if last is not None and line[:1].isspace():
                last.text = f"{last.text} {line.strip()}"  # continuation of a wrapped item
                continue
            # a paragraph inside a section: a criterion of its own, or the heading of the items that follow it
            last = _Item(kind, line.strip(), indent=-1)
            roots.append(last)
            stack = [last]
            continue
        item = _Item(kind, match.group("text").strip(), indent=len(match.group("indent")))
        while stack and stack[-1].indent >= item.indent:
            stack.pop()
        (stack[-1].children if stack else roots).append(item)
        stack.append(item)
        last = item
    return roots


def _leaves(
    items: Iterable[_Item], headings: tuple[str, ...] = ()
) -> Iterable[tuple[_Item, tuple[str, ...]]]:
    for item in items:
        if item.children:
            yield from _leaves(item.children, (*headings, _unescape(item.text)))
        else:
            yield item, headings


def split_criteria(markdown: str) -> list[dict[str, Any]]:
    """Return the criteria of eligibility markdown: one per list item, nested items under their heading."""
    criteria: list[dict[str, Any]] = []
    counters = {"inclusion": 0, "exclusion": 0}
    for item, headings in _leaves(_parse_items(markdown)):
        counters[item.kind] += 1
        criteria.append(
            {
                "id": f"{item.kind}-{counters[item.kind]}",
                "type": item.kind,
                "text": _unescape(item.text),
                "heading": " / ".join(headings) or None,
            }
        )
    if not counters["inclusion"]:
        raise CtgovImportError("eligibilityCriteria: no item under an 'Inclusion Criteria:' section")
    return criteria


def _module(protocol: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = protocol.get(name) or {}
    if not isinstance(value, Mapping):
        raise CtgovImportError(f"protocolSection.{name}: expected an object")
    return value


def _phase(phases: Any) -> str | None:
    """Return the catalog's phase value: ["PHASE1", "PHASE2"] -> "PHASE1_PHASE2"."""
    if not phases:
        return None
    return "_".join(str(phase) for phase in phases)


def _short_title(brief_title: str) -> str:
    if len(brief_title) <= SHORT_TITLE_MAX:
        return brief_title
    cut = brief_title[: SHORT_TITLE_MAX - 1].rsplit(" ", 1)[0]
    return f"{cut}…"


def _sites(locations: Any) -> list[str]:
    sites = []
    for location in locations or ():
        parts = [location.get(key) for key in ("facility", "city", "country")]
        text = ", ".join(str(part) for part in parts if part)
        if text and text not in sites:
            sites.append(text)
    return sites


def _anchor_label(conditions: Any) -> str:
    """The draft anchor's label: what is to encode, with the conditions the registry lists as a hint."""
    listed = ", ".join(str(c) for c in conditions if c) if isinstance(conditions, list) else ""
    return f"not yet encoded: disease and stage{f' (registry conditions: {listed})' if listed else ''}"


def study_to_trial(study: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Return a trial mapping (a dict in the catalog's format) for an API v2 study record."""
    protocol = study.get("protocolSection")
    if not isinstance(protocol, Mapping):
        raise CtgovImportError("protocolSection: missing (is this a ClinicalTrials.gov API v2 study record?)")
    identification = _module(protocol, "identificationModule")
    nct_id = identification.get("nctId")
    if not isinstance(nct_id, str) or not re.fullmatch(r"NCT\d{8}", nct_id):
        raise CtgovImportError("protocolSection.identificationModule.nctId: missing or not an NCT number")
    brief_title = identification.get("briefTitle") or identification.get("officialTitle")
    if not brief_title:
        raise CtgovImportError("protocolSection.identificationModule.briefTitle: missing")
    status = _module(protocol, "statusModule").get("overallStatus")
    if not status:
        raise CtgovImportError("protocolSection.statusModule.overallStatus: missing")
    eligibility_text = _module(protocol, "eligibilityModule").get("eligibilityCriteria")
    if not eligibility_text:
        raise CtgovImportError("protocolSection.eligibilityModule.eligibilityCriteria: missing")

    criteria = [{**criterion, "clinician": TO_ENCODE} for criterion in split_criteria(eligibility_text)]
    conditions = _module(protocol, "conditionsModule").get("conditions")
    lead_sponsor = _module(protocol, "sponsorCollaboratorsModule").get("leadSponsor") or {}
    return {
        "id": nct_id,
        "nct_id": nct_id,
        "acronym": identification.get("acronym") or None,
        "short_title": _short_title(brief_title),
        "title": identification.get("officialTitle") or brief_title,
        "status": status,
        "phase": _phase(_module(protocol, "designModule").get("phases")),
        "sponsor": lead_sponsor.get("name") or None,
        "sites": _sites(_module(protocol, "contactsLocationsModule").get("locations")),
        "url": f"https://clinicaltrials.gov/study/{nct_id}",
        "source": source,
        "anchors": [{"label": _anchor_label(conditions), "rule": {"clinician": ANCHOR_TO_ENCODE}}],
        "criteria": criteria,
    }


def trial_yaml(trial: Mapping[str, Any]) -> str:
    """Return the mapping file's text: a header saying what is left to do, then the YAML."""
    header = (
        f"# Draft imported from ClinicalTrials.gov ({trial['source']}).\n"
        "# Every criterion is verbatim and left to the clinician: encode rules (mappings/README.md).\n"
        "# Its anchor has a `clinician` rule, which is never true: the trial is not considered and gets no\n"
        "# card until a person encodes its anchors (disease and stage).\n"
    )
    body = yaml.safe_dump(dict(trial), sort_keys=False, allow_unicode=True, width=110)
    return header + body
