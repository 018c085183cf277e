"""How an engine tells what it has done, and the `rich` progress bar that shows it on a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.text import Text


@dataclass(frozen=True)
class Progress:
    """Callbacks an engine calls as work is done (from its driver process)."""

    read: Callable[[int], None]  # this many more bytes of the export read
    patients_found: Callable[[int], None]  # the export holds this many patients (once it is read)
    screened: Callable[[int], None]  # this many more patients screened


class _Done(ProgressColumn):
    """Done / total and the rate in the task's unit: "412 / 1,024 MB  38 MB/s", "800 / 2,000 patients ..."."""

    def render(self, task: Task) -> Text:
        scale, unit = task.fields["scale"], task.fields["unit"]
        total = f"{task.total * scale:,.0f}" if task.total is not None else "?"
        speed = task.finished_speed or task.speed
        rate = f"  {speed * scale:,.0f} {unit}/s" if speed else ""
        return Text(f"{task.completed * scale:,.0f} / {total} {unit}{rate}")


@contextmanager
def progress_bar(console: Console, read_bytes: int) -> Iterator[Progress]:
    """A reading bar (MB), then a screening bar (patients); drawn only when `console` is a terminal."""
    columns = (TextColumn("{task.description:<9}"), BarColumn(), _Done(), TimeElapsedColumn())
    with Bar(*columns, console=console, disable=not console.is_terminal) as bar:
        reading = bar.add_task("reading", total=read_bytes, scale=1e-6, unit="MB")
        screening = bar.add_task("screening", total=None, start=False, scale=1, unit="patients")

        def found(patients: int) -> None:
            bar.update(screening, total=patients)
            bar.start_task(screening)

        yield Progress(
            read=lambda n: bar.advance(reading, n),
            patients_found=found,
            screened=lambda n: bar.advance(screening, n),
        )
