"""What a screening found, summed over chunks and patients the same way whichever engine ran it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from cds_service.prescreen.export import Chunk, Export, LineNumbers
from cds_service.prescreen.keying import ChunkStats
from cds_service.prescreen.screen import PatientOutcome, TrialRow
from cds_service.verdicts import Verdict

VERDICT_ORDER = {Verdict.LIKELY.value: 0, Verdict.POSSIBLY.value: 1}


@dataclass(frozen=True)
class BadLine:
    file: str  # name in the export folder
    line: int  # from 1
    reason: str


@dataclass
class Screening:
    export: Export
    chunks: tuple[Chunk, ...]
    rows: list[TrialRow] = field(default_factory=list)
    screened: int = 0  # patients evaluated (failures included)
    without_patient: int = 0  # resources grouped under a patient id the export has no Patient for
    failed: list[tuple[str, str]] = field(default_factory=list)  # (patient id, where it failed)
    read: list[ChunkStats] = field(default_factory=list)

    def add_chunk(self, stats: ChunkStats) -> None:
        self.read.append(stats)

    def add(self, outcomes: Iterable[PatientOutcome]) -> None:
        for outcome in outcomes:
            if not outcome.found:
                self.without_patient += 1
                continue
            self.screened += 1
            self.rows.extend(outcome.rows)
            if outcome.error is not None:
                self.failed.append((outcome.patient_id, outcome.error))

    def worklist(self) -> list[TrialRow]:
        """The rows, likely-eligible first, then by trial and patient (the same whatever the engine)."""
        return sorted(self.rows, key=lambda r: (VERDICT_ORDER[r.verdict], r.nct_id, r.patient_id))

    def counts(self) -> Counter[str]:
        """Resources read, summed over chunks: lines, patients, grouped, medications, not_read, ..."""
        total: Counter[str] = Counter()
        for stats in self.read:
            for name in (
                "lines",
                "patients",
                "grouped",
                "medications",
                "not_read",
                "unattributed",
                "malformed",
            ):
                total[name] += getattr(stats, name)
        return total

    def bad_lines(self) -> list[BadLine]:
        """The malformed lines listed while reading, with their file and absolute line number, in order."""
        numbers = LineNumbers(self.chunks, {s.chunk: s.lines for s in self.read})
        by_index = {chunk.index: chunk for chunk in self.chunks}
        found = []
        for stats in sorted(self.read, key=lambda s: s.chunk):
            file = self.export.files[by_index[stats.chunk].file].path.name
            for line, reason in stats.listed:
                found.append(BadLine(file, numbers.absolute(stats.chunk, line), reason))
        return found
