"""How reasons show numbers, dates, units and names: short, factual, ISO dates."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from cds_service.terminology import Analyte


def fmt_number(value: float) -> str:
    """Format a measured or derived number for a reason: 80, 1.1, 0.004, 12.3."""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_multiple(value: float) -> str:
    """Format a multiple of a limit of normal: 2.0, 1.54."""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


_POWER_OF_TEN = re.compile(r"^10\*(\d+)/")


def unit_text(unit: str) -> str:
    """A UCUM unit as a clinician writes it: 10*3/uL as x10^3/uL, m[IU]/mL as mIU/mL; annotations such as
    {INR} and the unit 1 are not shown."""
    if unit.startswith("{") or unit == "1":
        return ""
    return _POWER_OF_TEN.sub(r"x10^\1/", unit).replace("[IU]", "IU").replace("[Hg]", "Hg")


def amount_text(value: float, unit: str) -> str:
    """A value with its unit as a reason shows it: "1.1 mg/dL", "1.1" (INR)."""
    shown = unit_text(unit)
    return f"{fmt_number(value)} {shown}" if shown else fmt_number(value)


def on(day: date | None) -> str:
    return f" on {day.isoformat()}" if day else " (undated)"


def since(day: date | None) -> str:
    return f" since {day.isoformat()}" if day else ""


def lower_first(title: str) -> str:
    """Lower-case a title's first letter unless it starts an acronym ("Heart failure" -> "heart failure")."""
    if len(title) > 1 and title[0].isupper() and not title[1].isupper():
        return title[0].lower() + title[1:]
    return title


def clean(text: str | None) -> str | None:
    """Remove zero-width characters some systems put into displays."""
    if text is None:
        return None
    cleaned = text.replace("\u200b", "").replace("\ufeff", "").strip()
    return cleaned or None


def analyte_label(analyte: Analyte | None, analyte_id: str) -> str:
    """Short analyte name: the abbreviation ending its title ("ALT", "aPTT"), else the id ("creatinine")."""
    if analyte and analyte.title.endswith(")") and "(" in analyte.title:
        abbreviation = analyte.title[analyte.title.rindex("(") + 1 : -1]
        if abbreviation.isalpha() and any(ch.isupper() for ch in abbreviation):
            return abbreviation
    return analyte_id.replace("-", " ")


def refs(items: Iterable[Any]) -> tuple[str, ...]:
    """The references of facts, each once, in order."""
    return tuple(dict.fromkeys(item.ref for item in items))
