"""report.html: the screening for a trial coordinator, in one file that needs no network.

Per trial: how many patients are likely and possibly eligible, and a bar chart (inline SVG) of the criteria
most often still to check; then the worklist as a table sorted by clicking a column header (inline script).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from cds_service.prescreen.screen import TrialRow

TEMPLATE = "report.html.j2"
BARS = 10  # criteria shown per trial chart
BAR_WIDTH = 320  # px of the longest bar
LABEL_CHARS = 70


@dataclass(frozen=True)
class Bar:
    criterion: str
    text: str  # verbatim criterion text, after its heading if it has one
    label: str  # the id and the text (without heading), shortened
    count: int
    width: int  # px


def bars(to_check: Mapping[str, int], texts: Mapping[str, tuple[str, str]]) -> list[Bar]:
    """The criteria most often still to check, most frequent first (ties by id), scaled to BAR_WIDTH."""
    ranked = sorted(to_check.items(), key=lambda item: (-item[1], item[0]))[:BARS]
    most = ranked[0][1] if ranked else 1
    found = []
    for criterion, count in ranked:
        heading, text = texts.get(criterion, ("", criterion))
        label = f"{criterion}: {text}"
        label = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1].rstrip() + "…"
        text = f"{heading} {text}" if heading else text
        found.append(Bar(criterion, text, label, count, max(2, round(BAR_WIDTH * count / most))))
    return found


def render_report(
    summary: Mapping[str, Any],
    worklist: Sequence[TrialRow],
    criteria: Mapping[str, Mapping[str, tuple[str, str]]],
) -> str:
    """The report's HTML; `criteria`: NCT number -> criterion id -> (heading or "", verbatim text)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    charts = {
        nct_id: bars(trial["to_check"], criteria.get(nct_id, {}))
        for nct_id, trial in summary["trials"].items()
    }
    return environment.get_template(TEMPLATE).render(
        summary=summary, worklist=worklist, charts=charts, bar_width=BAR_WIDTH
    )
