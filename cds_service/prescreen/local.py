"""The `local` engine: a process per core, memory bounded whatever the size of the export.

1. Read: each process takes chunks of the export's files, keys every line (keying.py) and appends it to one
   of P spill files on disk by a hash of its patient id (Medications to a file of their own). Nothing of the
   export stays in memory; P grows with the bytes read, so that a partition stays about `PARTITION_BYTES`.
2. Medications: the driver indexes them by id in SQLite (on disk), to be joined where they are referenced.
3. Screen: each process takes partitions, groups a partition's lines by patient (the lines only, not parsed),
   adds the Medications each patient references, and runs `screen_patient` on one patient at a time, its
   lines in export order (as the `spark` engine has them).

The processes are forked after the driver built its Screener, so they start with the compiled catalog.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cds_service.prescreen.export import Chunk, Export
from cds_service.prescreen.keying import ChunkStats, chunk_records
from cds_service.prescreen.progress import Progress
from cds_service.prescreen.results import Screening
from cds_service.prescreen.screen import PatientOutcome, ScreenSpec, screen_patient, screener, worker_screener

PARTITION_BYTES = 16 * 1024 * 1024
SPILL_BUFFER = 64 * 1024
MEDICATIONS = "medications"
INDEX = "medication-index.sqlite"

# (chunk index, line in chunk, text): the order of the export, so the same whatever the engine
Line = tuple[int, int, bytes]


def partition_count(chunks: tuple[Chunk, ...], workers: int) -> int:
    """Enough partitions for every worker to take several, each of about PARTITION_BYTES of the export."""
    read = sum(c.end - c.start for c in chunks)
    return max(4 * workers, math.ceil(read / PARTITION_BYTES))


def partition_of(key: str, partitions: int) -> int:
    """A partition by a hash that is the same in every process (str hashes are salted per process)."""
    return zlib.crc32(key.encode()) % partitions


@dataclass
class _Worker:
    """The state of one worker process: the job, and the spill files it appends to."""

    spec: ScreenSpec
    export: Export
    spill: Path
    partitions: int
    files: dict[int | str, BinaryIO] = field(default_factory=dict)

    def output(self, partition: int | str) -> BinaryIO:
        if partition not in self.files:
            name = (
                f"{partition}.{os.getpid()}" if partition == MEDICATIONS else f"{partition:05d}.{os.getpid()}"
            )
            self.files[partition] = (self.spill / name).open("ab", buffering=SPILL_BUFFER)
        return self.files[partition]


_worker: _Worker | None = None


def _start(spec: ScreenSpec, export: Export, spill: Path, partitions: int) -> None:
    global _worker
    _worker = _Worker(spec, export, spill, partitions)
    worker_screener(spec)


def _read_chunk(chunk: Chunk) -> ChunkStats:
    """Key every line of the chunk into the spill files."""
    assert _worker is not None
    stats = ChunkStats(chunk.index)
    path = _worker.export.files[chunk.file].path
    for record in chunk_records(path, chunk, _worker.spec.types, stats):
        partition = MEDICATIONS if record.medication else partition_of(record.key, _worker.partitions)
        needs = ",".join(record.needs).encode()
        _worker.output(partition).write(
            b"%s\t%d\t%d\t%s\t%s" % (record.key.encode(), chunk.index, record.line, needs, record.text)
        )
    for spill in _worker.files.values():
        spill.flush()
    return stats


def _records(paths: list[Path]) -> Iterator[list[bytes]]:
    for path in paths:
        with path.open("rb") as spill:
            for record in spill:
                yield record.split(b"\t", 4)


def _screen_partition(partition: int) -> list[PatientOutcome]:
    """Group one partition by patient, join its Medications, and screen each patient."""
    assert _worker is not None
    patients: dict[bytes, list[tuple[int, int, bytes, bytes]]] = {}
    for key, chunk, line, needs, text in _records(sorted(_worker.spill.glob(f"{partition:05d}.*"))):
        patients.setdefault(key, []).append((int(chunk), int(line), needs, text))
    outcomes = []
    with _medication_index(_worker.spill) as medications:
        screening = worker_screener(_worker.spec)
        for key in sorted(patients):
            entries = patients.pop(key)
            needed = {i for _, _, needs, _ in entries for i in needs.decode().split(",") if i}
            lines = sorted([(chunk, line, text) for chunk, line, _, text in entries] + medications(needed))
            outcomes.append(screen_patient(screening, key.decode(), [text for _, _, text in lines]))
    return outcomes


@contextmanager
def _medication_index(spill: Path) -> Iterator[Callable[[set[str]], list[Line]]]:
    """A lookup of the spilled Medications: ids -> their lines, in export order."""
    connection = sqlite3.connect(f"file:{spill / INDEX}?mode=ro", uri=True)

    def lookup(ids: set[str]) -> list[Line]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        query = f"SELECT chunk, line, text FROM medication WHERE id IN ({marks}) ORDER BY chunk, line"
        return list(connection.execute(query, sorted(ids)))

    try:
        yield lookup
    finally:
        connection.close()


def index_medications(spill: Path) -> None:
    """Put every Medication the workers spilled into an SQLite table by id (on disk, built in one pass)."""
    connection = sqlite3.connect(spill / INDEX)
    try:
        connection.execute("CREATE TABLE medication (id TEXT, chunk INTEGER, line INTEGER, text BLOB)")
        spilled = _records(sorted(spill.glob(f"{MEDICATIONS}.*")))
        rows = ((key.decode(), int(chunk), int(line), text) for key, chunk, line, _, text in spilled)
        connection.executemany("INSERT INTO medication VALUES (?, ?, ?, ?)", rows)
        connection.execute("CREATE INDEX medication_id ON medication (id)")
        connection.commit()
    finally:
        connection.close()


def run_local(
    screening: Screening, spec: ScreenSpec, spill: Path, progress: Progress, workers: int | None = None
) -> None:
    """Screen every patient of `screening.export` into `screening`, spilling to the folder `spill`."""
    workers = workers or len(os.sched_getaffinity(0))
    partitions = partition_count(screening.chunks, workers)
    screener(spec)  # built once here: the forked workers inherit it
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, _start, (spec, screening.export, spill, partitions)) as pool:
        for stats in pool.imap_unordered(_read_chunk, screening.chunks):
            screening.add_chunk(stats)
            chunk = screening.chunks[stats.chunk]
            progress.read(chunk.end - chunk.start)
        index_medications(spill)
        progress.patients_found(screening.counts()["patients"])
        for outcomes in pool.imap_unordered(_screen_partition, range(partitions)):
            screening.add(outcomes)
            progress.screened(len(outcomes))
