"""The `spark` engine: the reading and per-patient functions of the `local` engine, distributed by Spark.

    chunks, one row each  --mapInPandas(chunk_records)-->  keyed lines, kept on disk (persist): read once
    the patients' lines  +  the Medications they reference (a join on the Medication id)
      --repartition(patient)--sortWithinPartitions(patient, export order)--mapInPandas(screen_patient)-->
    one outcome per patient, collected by the driver

The catalog and card texts travel inside the function (`ScreenSpec.files`): each Python worker builds its
Screener once and keeps it while Spark reuses the worker (`spark.python.worker.reuse`, on by default).
Executors read the export's files by their path: on a cluster, EXPORT_DIR must be on a filesystem every
executor mounts at the same path. Progress comes from accumulators, which Spark updates as tasks finish.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.accumulators import Accumulator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cds_service.prescreen.export import Chunk, Export
from cds_service.prescreen.keying import ChunkStats, chunk_records
from cds_service.prescreen.local import partition_count
from cds_service.prescreen.progress import Progress
from cds_service.prescreen.results import Screening
from cds_service.prescreen.screen import PatientOutcome, ScreenSpec, TrialRow, screen_patient, worker_screener

KEYED = "kind string, key string, chunk int, line int, needs array<string>, text binary, stats string"
OUTCOMES = "patient_id string, found boolean, error string, rows string"
LINE, MEDICATION, STATS = "line", "medication", "stats"
BATCH_ROWS = 2_000  # rows of one pandas DataFrame handed back to Spark
POLL_SECONDS = 0.5


def session() -> SparkSession:
    """The running Spark session, else a new one (local[*] unless spark-submit or the config says otherwise).

    Python workers run this interpreter unless PYSPARK_PYTHON or `spark.pyspark.python` names another."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("cds-trials prescreen")
    return builder.config("spark.ui.showConsoleProgress", "false").getOrCreate()


def _keyer(
    export: Export, types: frozenset[str], read: Accumulator[int]
) -> Callable[..., Iterator[pd.DataFrame]]:
    """The function that keys the lines of the chunks it is given (one chunk per row)."""
    paths = [file.path for file in export.files]

    def key_chunks(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for index, file, start, end in batch.itertuples(index=False):
                stats = ChunkStats(int(index))
                rows: list[tuple[Any, ...]] = []
                chunk = Chunk(int(index), int(file), int(start), int(end))
                for record in chunk_records(paths[chunk.file], chunk, types, stats):
                    kind = MEDICATION if record.medication else LINE
                    rows.append(
                        (kind, record.key, chunk.index, record.line, list(record.needs), record.text, None)
                    )
                    if len(rows) == BATCH_ROWS:
                        yield _keyed(rows)
                        rows = []
                rows.append((STATS, None, chunk.index, 0, [], None, json.dumps(dataclasses.asdict(stats))))
                yield _keyed(rows)
                read.add(chunk.end - chunk.start)

    return key_chunks


def _keyed(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["kind", "key", "chunk", "line", "needs", "text", "stats"])


def _screener(spec: ScreenSpec, screened: Accumulator[int]) -> Callable[..., Iterator[pd.DataFrame]]:
    """The function that screens a partition's patients, its lines sorted by patient then export order."""

    def screen(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        screening = worker_screener(spec)
        patient: str | None = None
        lines: list[bytes] = []
        for batch in batches:
            outcomes: list[PatientOutcome] = []
            for key, text in zip(batch["key"], batch["text"], strict=True):
                if key != patient:
                    if patient is not None:
                        outcomes.append(screen_patient(screening, patient, lines))
                    patient, lines = key, []
                lines.append(text)
            screened.add(len(outcomes))
            yield _outcomes(outcomes)
        if patient is not None:
            screened.add(1)
            yield _outcomes([screen_patient(screening, patient, lines)])

    return screen


def _outcomes(outcomes: list[PatientOutcome]) -> pd.DataFrame:
    rows = [(o.patient_id, o.found, o.error, json.dumps([row[1:] for row in o.rows])) for o in outcomes]
    return pd.DataFrame(rows, columns=["patient_id", "found", "error", "rows"])


def _outcome(row: Any) -> PatientOutcome:
    rows = tuple(
        TrialRow(row.patient_id, nct, verdict, arm, tuple(to_check))
        for nct, verdict, arm, to_check in json.loads(row.rows)
    )
    return PatientOutcome(row.patient_id, rows, row.found, row.error)


@contextmanager
def _reporting(accumulator: Accumulator[int], report: Callable[[int], None]) -> Iterator[None]:
    """Report the accumulator's growth every POLL_SECONDS while the block runs (and once at its end)."""
    done = threading.Event()
    shown = 0

    def show() -> None:
        nonlocal shown
        value = accumulator.value
        report(value - shown)
        shown = value

    def poll() -> None:
        while not done.wait(POLL_SECONDS):
            show()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    show()


def grouped(keyed: DataFrame, partitions: int) -> DataFrame:
    """Each patient's lines and the Medications they reference, by patient, in export order."""
    lines = keyed.where(F.col("kind") == LINE)
    needs = lines.select("key", F.explode("needs").alias("id")).distinct()
    medications = keyed.where(F.col("kind") == MEDICATION).select(
        F.col("key").alias("id"), "chunk", "line", "text"
    )
    joined = needs.join(medications, "id").select("key", "chunk", "line", "text")
    return (
        lines.select("key", "chunk", "line", "text")
        .unionByName(joined)
        .repartition(partitions, "key")
        .sortWithinPartitions("key", "chunk", "line")
    )


def run_spark(screening: Screening, spec: ScreenSpec, progress: Progress) -> None:
    """Screen every patient of `screening.export` into `screening` with the Spark session of `session()`."""
    spark = session()
    context = spark.sparkContext
    read, screened = context.accumulator(0), context.accumulator(0)
    chunks = [(c.index, c.file, c.start, c.end) for c in screening.chunks]
    table = spark.createDataFrame(
        context.parallelize(chunks, max(1, len(chunks))), "index int, file int, start long, end long"
    )
    keyed = table.mapInPandas(_keyer(screening.export, spec.types, read), KEYED).persist(
        StorageLevel.DISK_ONLY
    )
    try:
        with _reporting(read, progress.read):
            found = keyed.where(F.col("kind") == STATS).select("stats").collect()  # fills the persisted lines
        for row in found:
            stats = json.loads(row.stats)
            stats["listed"] = [tuple(item) for item in stats["listed"]]
            screening.add_chunk(ChunkStats(**stats))
        progress.patients_found(screening.counts()["patients"])
        with _reporting(screened, progress.screened):
            partitions = partition_count(screening.chunks, context.defaultParallelism)
            outcomes = grouped(keyed, partitions).mapInPandas(_screener(spec, screened), OUTCOMES).collect()
        screening.add(_outcome(row) for row in outcomes)
    finally:
        keyed.unpersist()
