"""What `cds-trials feedback stats` shows: the feedback numbers of each trial as JSON or as tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the storage (and SQLAlchemy) is imported only by the commands that use it
    from cds_service.storage import TrialFeedback


def stats_document(trials: list[TrialFeedback], quiet_days: int) -> dict[str, Any]:
    """The numbers as `--json` prints them."""
    return {
        "quietDays": quiet_days,
        "trials": [
            {
                "nctId": trial.nct_id,
                "shown": trial.shown,
                "accepted": trial.accepted,
                "overridden": trial.overridden,
                "quietedPatients": trial.quieted_patients,
                "outOfDate": trial.out_of_date,
                "stillToCheck": trial.still_to_check,
                "orderWarnings": {
                    "shown": trial.warnings,
                    "accepted": trial.warnings_accepted,
                    "overridden": trial.warnings_overridden,
                },
            }
            for trial in trials
        ],
    }


def _overridden(by_reason: dict[str, int]) -> str:
    reasons = ", ".join(f"{code or '(no reason)'} {n}" for code, n in by_reason.items())
    return f"{sum(by_reason.values())}" + (f": {reasons}" if reasons else "")


def print_stats(console: Console, trials: list[TrialFeedback], quiet_days: int) -> None:
    """Cards by trial, order warnings by trial, then what was still to check on the cards dismissed as out of
    date."""
    table = Table(title="Feedback by trial", title_justify="left")
    for column in ("NCT", "shown", "accepted", "overridden (by reason)", f"quiet ({quiet_days} days)"):
        table.add_column(column, overflow="fold")
    for trial in trials:
        table.add_row(
            trial.nct_id,
            str(trial.shown),
            str(trial.accepted),
            _overridden(trial.overridden),
            str(trial.quieted_patients),
        )
    console.print(table)
    _print_order_warnings(console, trials)
    dismissed = [trial for trial in trials if trial.out_of_date]
    if not dismissed:
        console.print("No card was dismissed because the chart data was out of date.")
        return
    table = Table(
        title="Still to check on the cards dismissed as chart data out of date", title_justify="left"
    )
    for column in ("NCT", "dismissed", "criterion", "still to check"):
        table.add_column(column, overflow="fold")
    for trial in dismissed:
        criteria = list(trial.still_to_check.items()) or [("(none recorded)", 0)]
        for n, (criterion, count) in enumerate(criteria):
            first = n == 0
            table.add_row(
                trial.nct_id if first else "", str(trial.out_of_date) if first else "", criterion, str(count)
            )
    console.print(table)


def _print_order_warnings(console: Console, trials: list[TrialFeedback]) -> None:
    """The order warnings of each trial that had some: shown, accepted, overridden by reason."""
    warned = [trial for trial in trials if trial.warnings]
    if not warned:
        console.print("No order warning was shown.")
        return
    table = Table(title="Order warnings by trial (order-select, order-sign)", title_justify="left")
    for column in ("NCT", "shown", "accepted", "overridden (by reason)"):
        table.add_column(column, overflow="fold")
    for trial in warned:
        table.add_row(
            trial.nct_id,
            str(trial.warnings),
            str(trial.warnings_accepted),
            _overridden(trial.warnings_overridden),
        )
    console.print(table)
