"""`make bench`, population part: `cds-trials prescreen` on generated exports (bench/population.py).

In one run, on the same exports of N and N/10 patients:
- baseline: one process that only reads, parses and groups the export by patient (the lines of the types
  the rules read, keyed as the engines key them: `keying.chunk_records`), the physical floor of the job;
- local: the command as a user runs it (`cds-trials prescreen --engine local`), its process tree's memory
  (RSS and PSS, summed over the driver and its workers) sampled every 50 ms (PSS every 0.5 s);
- spark: `local[2]` in this process, the session started and warmed up (a small export) before timing;
- hook: a sample of the same population posted once per patient to patient-view under gunicorn (one sync
  worker per core, as `make run` serves it), from 4 client threads, bodies built beforehand.
Throughput is patients per second of the job's own duration (summary.json: reading to last patient).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.population import TODAY, population, write_export
from bench.run import BenchError, Target, _children, _post, _status_kb, gunicorn
from cds_service.bundle_file import hook_request_for
from cds_service.catalog import load_catalog
from cds_service.config import load_settings
from cds_service.pipeline import Matcher
from cds_service.prescreen.export import open_export
from cds_service.prescreen.keying import ChunkStats, chunk_records

REPO_ROOT = Path(__file__).resolve().parent.parent
HOOK_PATH = "/cds-services/mrcc-trials"
MIN_SHARE_OF_BASELINE = 0.2
MIN_TIMES_HOOK = 1.5
MIN_SPARK_SHARE_OF_LOCAL = 0.55
MAX_TIME_RATIO_10X = 10.5
MAX_LOCAL_RSS_MB = 300.0
SAMPLE_SECONDS = 0.05
# PSS (smaps_rollup: the kernel walks every page of the process) is read at every 10th sample only, 0.5 s
PSS_EVERY = 10
WARM_UP_PATIENTS = 300


@dataclass(frozen=True)
class Run:
    what: str  # baseline | local | spark | hook
    patients: int
    seconds: float
    peak_rss_mb: float = float("nan")  # summed over the process tree
    peak_pss_mb: float = float("nan")
    largest_rss_mb: float = float("nan")  # peak of any one process

    @property
    def throughput(self) -> float:
        return self.patients / self.seconds


def baseline(export_dir: Path) -> Run:
    """Read, parse and group by patient the lines the engines read; nothing else."""
    settings = load_settings({}, environ={})
    types = Matcher(load_catalog(settings.mappings_dir), settings).engine.read_plan.resource_types
    started = time.perf_counter()
    export = open_export(export_dir)
    groups: dict[str, list[tuple[int, int]]] = {}
    patients = 0
    for chunk in export.chunks(types):
        stats = ChunkStats(chunk.index)
        for record in chunk_records(export.files[chunk.file].path, chunk, types, stats):
            groups.setdefault(record.key, []).append((chunk.index, record.line))
        patients += stats.patients
    return Run("baseline", patients, time.perf_counter() - started)


def _tree(pid: int) -> list[int]:
    """The process and its descendants."""
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += _children(found[-1])
    return found


def _read(pids: list[int], key: str, file: str = "status") -> float:
    """A /proc value summed over processes (kB); a process that has just ended counts for nothing."""
    return sum(value for value in (_status_kb(pid, key, file) for pid in pids) if not math.isnan(value))


@contextmanager
def memory_of(process: subprocess.Popen[bytes]) -> Iterator[dict[str, float]]:
    """Peak RSS and PSS of the process and its descendants, summed, sampled while the block runs (MB)."""
    peaks = {"rss": 0.0, "pss": 0.0, "largest": 0.0}
    done = threading.Event()

    def sample() -> None:
        for count in itertools.count():
            if done.wait(SAMPLE_SECONDS):
                return
            pids = _tree(process.pid)
            now = {"rss": _read(pids, "VmRSS"), "largest": max(_read([pid], "VmHWM") for pid in pids)}
            if count % PSS_EVERY == 0:
                now["pss"] = _read(pids, "Pss", "smaps_rollup")
            peaks.update({key: max(peaks[key], value / 1024) for key, value in now.items()})

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join()


def local(export_dir: Path, out: Path) -> Run:
    """`cds-trials prescreen --engine local` in its own process, its tree's memory sampled."""
    command = [
        str(Path(sys.executable).parent / "cds-trials"),
        "prescreen",
        str(export_dir),
        "--out",
        str(out),
    ]
    env = {**os.environ, "CDS_TODAY": TODAY.isoformat()}
    process = subprocess.Popen([*command, "--engine", "local"], env=env, stdout=subprocess.DEVNULL)
    with memory_of(process) as peaks:
        if process.wait() != 0:
            raise RuntimeError(f"prescreen exited with {process.returncode}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    seconds = summary["duration_seconds"]
    return Run(
        "local", summary["patients"]["screened"], seconds, peaks["rss"], peaks["pss"], peaks["largest"]
    )


def spark_runs(exports: dict[int, Path], tmp: Path) -> dict[int, Run]:
    """The spark engine on each export, in one local[2] session started and warmed up beforehand."""
    from pyspark.sql import SparkSession
    from rich.console import Console

    from cds_service.prescreen.job import prescreen

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]").config("spark.ui.showConsoleProgress", "false").getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    settings = load_settings({}, environ={})
    catalog = load_catalog(settings.mappings_dir)

    def one(export_dir: Path, out: Path) -> dict[str, Any]:
        return prescreen(export_dir, out, "spark", catalog, settings, TODAY, Console(file=io.StringIO()))

    try:
        write_export(tmp / "warm-up", WARM_UP_PATIENTS, seed=99)
        one(tmp / "warm-up", tmp / "warm-up-out")
        runs = {}
        for n, export_dir in exports.items():
            summary = one(export_dir, tmp / f"spark-{n}")
            runs[n] = Run("spark", summary["patients"]["screened"], summary["duration_seconds"])
        return runs
    finally:
        session.stop()


def hook(sample: int, workers: int, tmp: Path) -> Run:
    """Each of `sample` patients of the population posted once to patient-view under gunicorn."""
    settings = load_settings({}, environ={})
    (service,) = [s for s in load_catalog(settings.mappings_dir).services if s.hook == "patient-view"]
    bodies = []
    for chart in population(sample):
        request = hook_request_for(service.hook, service.prefetch, chart, str(uuid.uuid4()))
        body = {"hook": request.hook, "hookInstance": request.hook_instance, "context": dict(request.context)}
        bodies.append(json.dumps({**body, "prefetch": request.prefetch}).encode())
    env = {
        **os.environ,
        "CDS_SANDBOX": "1",
        "CDS_TODAY": TODAY.isoformat(),
        "CDS_DATABASE_URL": f"sqlite:///{tmp}/hook.sqlite3",
    }
    config = REPO_ROOT / "gunicorn.conf.py"
    with gunicorn("wsgi:app", env, workers, tmp / "gunicorn.log", 180.0, config) as (port, _, _):
        for body in bodies[: 2 * workers]:  # every worker warm
            _post(port, HOOK_PATH, body)
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as clients:
            statuses = list(clients.map(lambda body: _post(port, HOOK_PATH, body)[0], bodies))
        seconds = time.perf_counter() - started
    if set(statuses) != {200}:
        raise BenchError(f"patient-view answered {sorted(set(statuses))}")
    return Run("hook", sample, seconds)


def _compared(run: Run, other: Run, suffix: str = "") -> tuple[str, float]:
    """ "a / b patients/s = ratio", and the ratio of the throughputs."""
    ratio = run.throughput / other.throughput
    return f"{run.throughput:.0f} / {other.throughput:.0f} patients/s = {ratio:.2f}{suffix}", ratio


def targets(runs: dict[tuple[str, int], Run], n: int) -> list[Target]:
    small = n // 10
    base, mine, fast, few = runs["baseline", n], runs["local", n], runs["spark", n], runs["spark", small]
    web = next(run for (what, _), run in runs.items() if what == "hook")
    of_baseline, of_hook, of_local = _compared(mine, base), _compared(mine, web, "x"), _compared(fast, mine)
    ratio = fast.seconds / few.seconds
    rss = (runs["local", small].peak_rss_mb, runs["local", n].peak_rss_mb)
    return [
        Target(
            f"local vs baseline (read, parse, group), N = {n:,}",
            of_baseline[0],
            f">= {MIN_SHARE_OF_BASELINE:g}",
            of_baseline[1] >= MIN_SHARE_OF_BASELINE,
        ),
        Target(
            f"local vs patient-view over HTTP, once per patient ({web.patients:,} patients)",
            of_hook[0],
            f">= {MIN_TIMES_HOOK:g}x",
            of_hook[1] >= MIN_TIMES_HOOK,
        ),
        Target(
            f"spark (local[2]) vs local, N = {n:,}",
            of_local[0],
            f">= {MIN_SPARK_SHARE_OF_LOCAL:g}",
            of_local[1] >= MIN_SPARK_SHARE_OF_LOCAL,
        ),
        Target(
            f"spark, 10x the patients ({small:,} -> {n:,}): time ratio",
            f"{few.seconds:.1f} -> {fast.seconds:.1f} s = {ratio:.2f}x",
            f"<= {MAX_TIME_RATIO_10X:g}x",
            ratio <= MAX_TIME_RATIO_10X,
        ),
        Target(
            f"local, peak RSS of the driver and its workers together (N = {small:,} and {n:,})",
            f"{rss[0]:.0f} and {rss[1]:.0f} MB",
            f"< {MAX_LOCAL_RSS_MB:g} MB",
            max(rss) < MAX_LOCAL_RSS_MB,
        ),
    ]


def measure(n: int, sample: int, workers: int) -> tuple[list[Target], list[Run], dict[int, float]]:
    """Every run of the population part; the export sizes (MB) too."""
    tmp = Path(tempfile.mkdtemp(prefix="cds-bench-population-"))
    try:
        exports = {}
        sizes = {}
        for count in (n // 10, n):
            started = time.perf_counter()
            exports[count] = tmp / f"export-{count}"
            write_export(exports[count], count)
            sizes[count] = sum(p.stat().st_size for p in exports[count].iterdir()) / 1e6
            seconds = time.perf_counter() - started
            print(f"export of {count:,} patients ({sizes[count]:.0f} MB) in {seconds:.0f} s", flush=True)
        runs: dict[tuple[str, int], Run] = {}
        for count, export_dir in exports.items():
            runs["baseline", count] = baseline(export_dir)
            runs["local", count] = local(export_dir, tmp / f"local-{count}")
            _show(runs["baseline", count], runs["local", count])
        for count, run in spark_runs(exports, tmp).items():
            runs["spark", count] = run
            _show(run)
        runs["hook", sample] = hook(sample, workers, tmp)
        _show(runs["hook", sample])
        return targets(runs, n), list(runs.values()), sizes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _show(*runs: Run) -> None:
    for run in runs:
        print(
            f"  {run.what:>8} {run.patients:>7,} patients {run.seconds:7.1f} s"
            f" {run.throughput:7.0f} patients/s"
            + (
                f"  peak RSS {run.peak_rss_mb:.0f} MB, PSS {run.peak_pss_mb:.0f} MB"
                if run.what == "local"
                else ""
            ),
            flush=True,
        )


def section(found: list[Target], runs: list[Run], sizes: dict[int, float], args: argparse.Namespace) -> str:
    """The population part of bench/results.md."""
    lines = [
        "## Population pre-screening",
        "",
        f"`bench/prescreen.py`: exports of {min(sizes):,} and {max(sizes):,} patients written by"
        " `bench/population.py` (30% gallery mRCC clones, the rest general-population noise;"
        f" {sizes[min(sizes)]:.0f} and {sizes[max(sizes)]:.0f} MB), measured in this run.",
        "",
        "| target | measured | limit | met |",
        "|---|---|---|---|",
        *(f"| {t.name} | {t.measured} | {t.limit} | {'yes' if t.met else '**NO**'} |" for t in found),
        "",
        f"Population targets met: **{'yes' if all(t.met for t in found) else 'no'}**.",
        "",
        "| run | patients | seconds | patients/s | peak RSS MB (tree) | peak PSS MB (tree) |"
        " largest process RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.what} | {r.patients:,} | {r.seconds:.1f} | {r.throughput:.0f} |"
            + (
                f" {r.peak_rss_mb:.0f} | {r.peak_pss_mb:.0f} | {r.largest_rss_mb:.0f} |"
                if r.what == "local"
                else " | | |"
            )
            for r in runs
        ),
        "",
        "- baseline: one process reading the files of the types the rules read, parsing every line and"
        " grouping the lines by patient (`keying.chunk_records`), nothing else",
        f"- local: `cds-trials prescreen --engine local` in a process of its own ({os.cpu_count()} workers);"
        " seconds are the job's (summary.json), memory is sampled over the driver and its workers every"
        " 50 ms (PSS every 0.5 s)",
        "- spark: `--engine spark` on `local[2]` in the benchmark's process, the session started and a"
        f" {WARM_UP_PATIENTS}-patient export screened before timing",
        f"- hook: {args.population_sample:,} patients of the same population posted once each to"
        f" patient-view (gunicorn, {args.workers} sync workers, 4 client threads, bodies built beforehand;"
        " cards and the audit row included)",
        f"- load average before the part: {args.population_load:.1f}; the machine is shared, so ratios move"
        " between runs",
        "",
    ]
    return "\n".join(lines)
