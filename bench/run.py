"""`make bench`: the service against a JSON-only baseline on the same gunicorn/Flask stack, on 127.0.0.1.

For each server (the baseline, then the real app with catalogs of 4, 100 and 1,000 trials, one at a time so
that they never compete for the cores), and each prefetch size (20, 240, 1,000 resources), it checks one
answer, warms the workers up, then replays the same patient-view call with 1 and then 4 concurrent clients,
each run bounded in time and in count. Load comes from `wrk` (installed with apt-get when missing and
allowed) with a Lua script posting the body, else from a small threaded Python client. Worker memory is read
from /proc after the runs. bench/out/results.md (ignored by git) gets the tables, the targets (computed) and
the machine; bench/results.md is the run the README quotes, copied there by hand.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.generate import SERVICE_ID, TODAY, count_resources, generate_catalog, hook_request
from bench.orders import ORDER_SELECT_SERVICE, ORDER_SELECT_SIZE, order_select_request

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "bench" / "out" / "results.md"
WRK_SCRIPT = Path(__file__).resolve().parent / "post.lua"
HOST = "127.0.0.1"
BASELINE = "baseline"
CONCURRENCY = (1, 4)
HOOK_PATH = f"/cds-services/{SERVICE_ID}"
ORDER_SELECT = "order-select"  # the order-select cells are named "<server>, order-select"

# Targets of the performance issue, checked from the numbers of one run.
MAX_P50_RATIO_TO_BASELINE = 5.0
MIN_THROUGHPUT_SHARE_OF_BASELINE = 0.20
MAX_P50_RATIO_LARGE_CATALOG = 3.0
MAX_WORKER_RSS_MB = 200.0
TARGET_SIZES = (240, 1000)
POPULATION_HEADING = "## Population pre-screening"


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, or answered wrongly)."""


@dataclass
class Load:
    """Latency and throughput of one run at one concurrency."""

    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = float("nan")  # CPU time of the gunicorn workers per request (robust to a busy machine)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Cell:
    """Every measurement of one server at one prefetch size."""

    server: str
    size: int
    body_kb: float
    cards: int
    card_ids: list[str]
    loads: dict[int, Load] = field(default_factory=dict)


@dataclass
class ServerStats:
    server: str
    workers: int
    startup_s: float
    first_call_ms: float
    rss_mb: list[float]
    hwm_mb: list[float]
    pss_mb: list[float]


# --- load generation -------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def _post(port: int, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def python_load(
    port: int, path: str, body: bytes, concurrency: int, seconds: float, max_requests: int
) -> Load:
    """Closed-loop load from `concurrency` threads, each timing its requests with perf_counter."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    budget = iter(range(max_requests))

    def client() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            with lock:
                if next(budget, None) is None:
                    return
            start = time.perf_counter()
            status, _ = _post(port, path, body)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                errors += status != 200

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Load(
        concurrency, len(ordered), elapsed, *(1000 * _percentile(ordered, q) for q in (50, 95, 99)), errors
    )


def wrk_load(
    port: int, path: str, body_file: Path, concurrency: int, seconds: float, max_requests: int
) -> Load:
    """Closed-loop load from wrk (one thread per two connections), latency percentiles from its histogram."""
    threads = max(1, min(concurrency, 2))
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_MAX_REQUESTS": str(max(1, max_requests // threads)),
    }
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{HOST}:{port}{path}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    report = json.loads(lines[-1])
    errors = sum(report["errors"].values())
    return Load(
        concurrency,
        report["requests"],
        report["duration_us"] / 1e6,
        report["p50_us"] / 1000,
        report["p95_us"] / 1000,
        report["p99_us"] / 1000,
        errors,
    )


def wrk_version(wrk: str) -> str:
    """wrk's name and version as it prints them ("wrk debian/4.1.0-3+b2"), without its path."""
    shown = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout
    return " ".join(shown.split()[:2]) or "wrk"


def find_wrk(install: bool) -> str | None:
    """Return the path of wrk, installing Debian's package when missing and allowed (root, apt-get)."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    installed = subprocess.run(
        ["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True, check=False
    )
    if installed.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True, check=False)
    return shutil.which("wrk")


# --- servers ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"gunicorn exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"no healthy answer on port {port} within {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    """The process's children, as the kernel lists them per thread (none once it has ended).

    From `/proc/<pid>/task/<tid>/children` rather than by reading every process's `stat`: the population
    benchmark samples a process tree every 50 ms, and that scan took a fifth to a half of a core away from
    the run it measured on two cores."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process has ended
        return []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # that thread has ended
            continue
    return sorted(found)


def _workers(master: int) -> list[int]:
    """The gunicorn master's workers; BenchError when there are none (their CPU and memory would read 0)."""
    workers = _children(master)
    if not workers:
        raise BenchError(f"no worker found under the gunicorn master {master} (/proc/<pid>/task/*/children)")
    return workers


def workers_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes (from /proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _status_kb(pid: int, key: str, file: str = "status") -> float:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def worker_memory(master: int) -> tuple[list[float], list[float], list[float]]:
    """RSS, peak RSS (VmHWM) and proportional set size of each gunicorn worker, in MB."""
    workers = _workers(master)
    return (
        [_status_kb(p, "VmRSS") / 1024 for p in workers],
        [_status_kb(p, "VmHWM") / 1024 for p in workers],
        [_status_kb(p, "Pss", "smaps_rollup") / 1024 for p in workers],
    )


@contextmanager
def gunicorn(
    app: str, env: dict[str, str], workers: int, log: Path, start_timeout: float, config: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes], float]]:
    """Run gunicorn with the config file `config` on a free port of 127.0.0.1."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(config),
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        app,
    ]
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, process, start_timeout)
            yield port, process, time.monotonic() - started
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the run ---------------------------------------------------------------------------------------


def _card_ids(answer: dict[str, Any]) -> list[str]:
    ids = []
    for card in answer.get("cards", []):
        result = card.get("extension", {}).get("org.trialmatch.eligibility", {})
        ids.append(result.get("nctId") or card.get("summary", "?"))
    return sorted(ids)


@dataclass
class Server:
    """One running gunicorn: the baseline or the real app with one catalog."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    startup_s: float
    log: Path
    first_call_ms: float | None = None


def check_answer(server: Server, size: int, body_file: Path, path: str = HOOK_PATH) -> Cell:
    """Post the call once: it must be answered with 200 and a card list (else the timings mean nothing)."""
    body = body_file.read_bytes()
    started = time.perf_counter()
    status, raw = _post(server.port, path, body)
    if server.first_call_ms is None:
        server.first_call_ms = 1000 * (time.perf_counter() - started)
    if status != 200:
        raise BenchError(f"{server.name}, {size} resources: HTTP {status}: {raw[:300]!r}")
    answer = json.loads(raw)
    return Cell(server.name, size, len(body) / 1024, len(answer.get("cards", [])), _card_ids(answer))


def measure(
    server: Server,
    body_file: Path,
    concurrency: int,
    seconds: float,
    args: argparse.Namespace,
    wrk: str | None,
    path: str = HOOK_PATH,
) -> Load:
    """Replay the call with `concurrency` clients for `seconds` (and at most `args.max_requests` each)."""
    count = args.max_requests * concurrency
    workers = _workers(server.process.pid)
    cpu_before = workers_cpu_seconds(workers)
    if wrk:
        load = wrk_load(server.port, path, body_file, concurrency, seconds, count)
    else:
        load = python_load(server.port, path, body_file.read_bytes(), concurrency, seconds, count)
    if load.requests:
        load.cpu_ms = 1000 * (workers_cpu_seconds(workers) - cpu_before) / load.requests
    return load


def combine(rounds: list[Load]) -> Load:
    """One Load from a server's rounds: percentiles are the median over rounds, totals are summed."""
    requests = sum(r.requests for r in rounds)
    cpu = sum(r.cpu_ms * r.requests for r in rounds if r.requests)
    return Load(
        rounds[0].concurrency,
        requests,
        sum(r.seconds for r in rounds),
        *(
            statistics.median(getattr(r, q) for r in rounds if r.requests)
            for q in ("p50_ms", "p95_ms", "p99_ms")
        ),
        sum(r.errors for r in rounds),
        cpu / requests if requests else float("nan"),
    )


def measure_in_turn(
    servers: list[Server],
    row: dict[str, Cell],
    body_file: Path,
    concurrency: int,
    args: argparse.Namespace,
    wrk: str | None,
    path: str = HOOK_PATH,
) -> None:
    """Measure every server in `args.rounds` short rounds, taking turns, so that a busy moment of the machine
    falls on all of them alike."""
    rounds: dict[str, list[Load]] = {server.name: [] for server in servers}
    for _ in range(args.rounds):
        for server in servers:
            rounds[server.name].append(
                measure(server, body_file, concurrency, args.seconds / args.rounds, args, wrk, path)
            )
    for server in servers:
        cell = row[server.name]
        load = cell.loads[concurrency] = combine(rounds[server.name])
        print(
            f"  {server.name:>12} {cell.size:>5} resources, {concurrency} client(s):"
            f" p50 {load.p50_ms:7.1f} ms"
            f"  p99 {load.p99_ms:7.1f} ms  {load.throughput:7.1f} req/s  CPU {load.cpu_ms:6.1f} ms/req"
            f"  ({load.requests} requests, {load.errors} errors, {cell.cards} cards)",
            flush=True,
        )


def measure_order_select(
    servers: list[Server], folder: Path, args: argparse.Namespace, wrk: str | None
) -> list[Cell]:
    """The order-select call of bench/orders.py on the baseline and the smallest catalog, taking turns as the
    patient-view calls do; the app must answer it with its warning card (else the warning path is not what
    is timed)."""
    measured = [s for s in servers if s.name in (BASELINE, _server(min(args.catalogs)))]
    body_file = folder / "order-select.json"
    body_file.write_text(json.dumps(order_select_request()), encoding="utf-8")
    path = f"/cds-services/{ORDER_SELECT_SERVICE}"
    row = {s.name: check_answer(s, ORDER_SELECT_SIZE, body_file, path) for s in measured}
    if [cell.cards for cell in row.values()] != [0, 1]:
        raise BenchError(f"order-select: expected no card from the baseline and one warning, got {row}")
    for server in measured:
        for _ in range(2 * args.workers):
            _post(server.port, path, body_file.read_bytes())
    for concurrency in CONCURRENCY:
        measure_in_turn(measured, row, body_file, concurrency, args, wrk, path)
    for cell in row.values():
        cell.server = f"{cell.server}, {ORDER_SELECT}"
    return list(row.values())


def run(args: argparse.Namespace) -> tuple[list[Cell], list[ServerStats], dict[str, Any]]:
    """Start every server, then measure them in turn for each size and concurrency (so that a busy moment
    of the machine hits all of them alike), and read the workers' memory at the end."""
    load_before = os.getloadavg()[0]
    wrk = None if args.client == "python" else find_wrk(install=args.client in ("auto", "wrk"))
    if args.client == "wrk" and not wrk:
        raise BenchError("wrk is not installed and could not be installed")
    tmp = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    try:
        bodies = {}
        for size in args.sizes:
            request = hook_request(size)
            assert count_resources(request) == size
            bodies[size] = tmp / f"request-{size}.json"
            bodies[size].write_text(json.dumps(request), encoding="utf-8")
        # gunicorn.conf.py's master brings CDS_DATABASE_URL's schema up: the baseline's is a throwaway one too
        baseline_env = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{tmp}/baseline.sqlite3"}
        apps: list[tuple[str, str, dict[str, str]]] = [(BASELINE, "bench.baseline_app:app", baseline_env)]
        for n_trials in args.catalogs:
            started = time.monotonic()
            catalog = generate_catalog(tmp / f"catalog-{n_trials}", n_trials)
            print(f"catalog of {n_trials} trials generated in {time.monotonic() - started:.1f} s", flush=True)
            env = {
                **os.environ,
                "CDS_SANDBOX": "1",
                "CDS_TODAY": TODAY.isoformat(),
                "CDS_MAPPINGS_DIR": str(catalog),
                "CDS_DATABASE_URL": f"sqlite:///{tmp}/bench-{n_trials}.sqlite3",
            }
            apps.append((_server(n_trials), "wsgi:app", env))
        with ExitStack() as stack:
            servers = []
            for name, app, env in apps:
                log = tmp / f"gunicorn-{name.replace(' ', '-')}.log"
                print(
                    f"{name}: starting gunicorn ({args.workers} sync workers, {args.config.name})", flush=True
                )
                try:
                    port, process, startup = stack.enter_context(
                        gunicorn(app, env, args.workers, log, args.start_timeout, args.config)
                    )
                except BenchError:
                    sys.stderr.write(log.read_text(errors="replace")[-4000:])
                    raise
                servers.append(Server(name, port, process, startup, log))
            cells: list[Cell] = []
            try:
                for size, body_file in bodies.items():
                    row = {server.name: check_answer(server, size, body_file) for server in servers}
                    for server in servers:  # every worker answers this call once before any timing
                        for _ in range(2 * args.workers):
                            _post(server.port, HOOK_PATH, body_file.read_bytes())
                    for concurrency in CONCURRENCY:
                        measure_in_turn(servers, row, body_file, concurrency, args, wrk)
                    cells += row.values()
                order_cells = measure_order_select(servers, tmp, args, wrk)
            except (BenchError, OSError):
                for server in servers:
                    alive = (
                        "running" if server.process.poll() is None else f"exited {server.process.returncode}"
                    )
                    sys.stderr.write(f"--- {server.name} ({alive}), end of its log:\n")
                    sys.stderr.write(
                        "\n".join(server.log.read_text(errors="replace").splitlines()[-15:]) + "\n"
                    )
                raise
            stats = [
                ServerStats(
                    s.name, args.workers, s.startup_s, s.first_call_ms or 0.0, *worker_memory(s.process.pid)
                )
                for s in servers
            ]
        order = {server.name: i for i, server in enumerate(servers)}
        cells.sort(key=lambda c: (order[c.server], c.size))
        cells += order_cells
        info = {
            "client": wrk_version(wrk) if wrk else "Python threads (http.client)",
            "load": f"{load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after it",
        }
        return cells, stats, info
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# --- report ----------------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def machine_info() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    total_kb = next(
        (
            float(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        float("nan"),
    )
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{total_kb / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "stack": ", ".join(f"{p} {_version(p)}" for p in ("gunicorn", "flask", "fhir.resources", "pydantic")),
    }


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    met: bool


def _p50_ratio(compared: str, cell: Cell, reference: Cell, limit: float) -> Target:
    """The p50 of `cell` against that of `reference`, 1 client each."""
    p50, reference_p50 = cell.loads[1].p50_ms, reference.loads[1].p50_ms
    ratio = p50 / reference_p50
    return Target(
        f"p50, {compared} (1 client)",
        f"{p50:.1f} / {reference_p50:.1f} ms = {ratio:.2f}x",
        f"<= {limit:g}x",
        ratio <= limit,
    )


def _server(n_trials: int) -> str:
    return f"{n_trials} trials"


def check_targets(cells: list[Cell], stats: list[ServerStats], catalogs: list[int]) -> list[Target]:
    """Compare the run's numbers with the issue's targets (every ratio is taken within this run)."""
    cell = {(c.server, c.size): c for c in cells}
    small, large = _server(min(catalogs)), _server(max(catalogs))
    sizes = sorted({c.size for c in cells})
    found: list[Target] = []
    for size in (s for s in TARGET_SIZES if s in sizes):
        base, real = cell[(BASELINE, size)], cell[(small, size)]
        compared = f"{size} resources, {small} vs baseline"
        found.append(_p50_ratio(compared, real, base, MAX_P50_RATIO_TO_BASELINE))
        share = real.loads[4].throughput / base.loads[4].throughput
        found.append(
            Target(
                f"throughput, {size} resources, {small} vs baseline (4 clients)",
                f"{real.loads[4].throughput:.1f} / {base.loads[4].throughput:.1f} req/s = {share:.0%}",
                f">= {MIN_THROUGHPUT_SHARE_OF_BASELINE:.0%}",
                share >= MIN_THROUGHPUT_SHARE_OF_BASELINE,
            )
        )
    if large != small:
        for size in sizes:
            few, many = cell[(small, size)], cell[(large, size)]
            compared = f"{size} resources, {large} vs {small}"
            found.append(_p50_ratio(compared, many, few, MAX_P50_RATIO_LARGE_CATALOG))
            kept = set(few.card_ids) <= set(many.card_ids)
            found.append(
                Target(
                    f"cards, {size} resources: every card of {small} also with {large}",
                    f"{few.cards} -> {many.cards} cards",
                    "none lost",
                    kept,
                )
            )
    found += order_select_targets(cell, small)
    peak = max((max(s.hwm_mb) for s in stats if s.server == large), default=float("nan"))
    found.append(
        Target(
            f"worker memory, {large} (peak RSS of any worker)",
            f"{peak:.0f} MB",
            f"< {MAX_WORKER_RSS_MB:g} MB",
            peak < MAX_WORKER_RSS_MB,
        )
    )
    return found


def order_select_targets(cell: dict[tuple[str, int], Cell], small: str) -> list[Target]:
    """order-select's p50 against the baseline's, both with the order-select body (bench/orders.py)."""
    base = cell.get((f"{BASELINE}, {ORDER_SELECT}", ORDER_SELECT_SIZE))
    real = cell.get((f"{small}, {ORDER_SELECT}", ORDER_SELECT_SIZE))
    if base is None or real is None:
        return []
    compared = f"{ORDER_SELECT}, {ORDER_SELECT_SIZE} resources, {small} vs baseline"
    return [_p50_ratio(compared, real, base, MAX_P50_RATIO_TO_BASELINE)]


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _ms(value: float) -> str:
    return f"{value:.1f}"


def render(
    cells: list[Cell],
    stats: list[ServerStats],
    targets: list[Target],
    info: dict[str, str],
    args: argparse.Namespace,
    command: str,
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    baseline = {c.size: c for c in cells if c.server == BASELINE}
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {now}; do not edit by hand.",
        "Every ratio below compares numbers of this one run.",
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "|---|---|---|---|",
        *(f"| {t.name} | {t.measured} | {t.limit} | {'yes' if t.met else '**NO**'} |" for t in targets),
        "",
        f"All targets met: **{'yes' if all(t.met for t in targets) else 'no'}**.",
        "",
        "## Latency and throughput",
        "",
        "Same patient-view call replayed (one mRCC chart cut at the given size); latency in ms;"
        ' `baseline` is `bench/baseline_app.py` (parses the JSON body, answers `{"cards": []}`)'
        " on the same gunicorn stack. The rows `..., order-select` replay the order-select call of"
        " `bench/orders.py` (the same chart with one draft order that ends a trial: one warning card);"
        " their ratios are to the baseline's patient-view row.",
        "",
        "| server | resources | body KB | cards | p50 | p95 | p99 | req/s | CPU ms/call | p50 (4 clients)"
        " | p99 (4 clients) | req/s (4 clients) | p50 / baseline | req/s (4) / baseline | CPU / baseline"
        " | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        one, four, base = c.loads[1], c.loads[4], baseline.get(c.size)
        compared = base is not None and c.server != BASELINE
        ratio = f"{one.p50_ms / base.loads[1].p50_ms:.2f}x" if compared else "-"
        share = f"{four.throughput / base.loads[4].throughput:.0%}" if compared else "-"
        cpu = f"{one.cpu_ms / base.loads[1].cpu_ms:.1f}x" if compared and base.loads[1].cpu_ms > 0 else "-"
        lines.append(
            f"| {c.server} | {c.size} | {c.body_kb:.0f} | {c.cards} | {_ms(one.p50_ms)} | {_ms(one.p95_ms)} |"
            f" {_ms(one.p99_ms)} | {one.throughput:.1f} | {_ms(one.cpu_ms)} | {_ms(four.p50_ms)} |"
            f" {_ms(four.p99_ms)} | {four.throughput:.1f} | {ratio} | {share} | {cpu} |"
            f" {one.errors + four.errors} |"
        )
    lines += [
        "",
        "CPU ms/call: user + system CPU time of the gunicorn workers during the 1-client run, divided by the"
        " requests answered (from /proc): unlike latency, it hardly grows when other processes load the"
        " machine.",
        "",
    ]
    lines += [
        "## Worker memory",
        "",
        "Read from /proc after the runs: RSS counts pages shared with the master; PSS shares them out.",
        "",
        "| server | workers | start (s) | first call (ms) | RSS MB (max) | peak RSS MB (max)"
        " | PSS MB (max) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {s.server} | {s.workers} | {s.startup_s:.1f} | {s.first_call_ms:.1f} | {max(s.rss_mb):.0f} |"
            f" {max(s.hwm_mb):.0f} | {max(s.pss_mb):.0f} |"
            for s in stats
        ),
        "",
        "First call: the first call a freshly started worker answered"
        f" ({min(c.size for c in cells)} resources); compare with that size's p50 above.",
        "",
        "## Machine and method",
        "",
        *(f"- {key}: {value}" for key, value in machine_info().items()),
        f"- load average (1 min; the run itself keeps 2 to 3 processes busy): {info['load']}",
        f"- load generator: {info['client']}, on the same machine, closed loop (each client sends its next"
        f" call when the answer is in), after every worker has answered the call once",
        f"- timing: for each size and number of clients, {args.seconds:g} s per server (at most"
        f" {args.max_requests} calls per client) in {args.rounds} rounds, the servers taking turns within"
        " each round so that other load on the machine falls on all of them alike; p50/p95/p99 are the"
        " medians over the rounds, calls per second and CPU are totals over them",
        f"- servers: gunicorn with `{_shown(args.config)}`, {args.workers} sync workers, all running"
        " during the whole measurement; the app with CDS_SANDBOX=1,"
        f" CDS_TODAY={TODAY.isoformat()}, a new SQLite database,"
        " CDS_MAPPINGS_DIR = a generated catalog"
        " (`bench/generate.py`: the seed trials, about 5% kidney variants with changed thresholds, the rest"
        " retargeted to other cancers)",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def numbers(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part]

    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=numbers, default=[20, 240, 1000], help="prefetch sizes (resources)")
    parser.add_argument("--catalogs", type=numbers, default=[4, 100, 1000], help="catalog sizes (trials)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per server, size and concurrency")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds those seconds are split into, servers in turn"
    )
    parser.add_argument(
        "--max-requests", type=int, default=20_000, help="count bound of each run, per client"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gunicorn sync workers")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--start-timeout", type=float, default=180.0, help="seconds a server may take to start"
    )
    parser.add_argument(
        "--config", type=Path, default=REPO_ROOT / "gunicorn.conf.py", help="gunicorn config of every server"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="Markdown report to write")
    parser.add_argument(
        "--part",
        choices=("all", "hook", "population"),
        default="all",
        help="run only the hook or the population pre-screening part (the other part's results are kept)",
    )
    parser.add_argument(
        "--population", type=int, default=20_000, help="patients of the larger pre-screening export (N)"
    )
    parser.add_argument(
        "--population-sample", type=int, default=1_000, help="patients posted to patient-view one by one"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes and catalogs, 1 s runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, catalogs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.catalogs, args.seconds, args.rounds = [20, 240], [4, 100], 1.0, 1
        args.population, args.population_sample = 2_000, 200
    return args


def _kept(text: str, part: str) -> str:
    """The hook part or the population part of a results.md written before."""
    head, marker, tail = text.partition(POPULATION_HEADING)
    return head if part == "hook" else marker + tail


def main(argv: list[str] | None = None) -> int:
    from bench import prescreen

    args = parse_args(argv)
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    before = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
    try:
        if args.part == "population":
            hook_part, targets = _kept(before, "hook"), []
        else:
            cells, stats, info = run(args)
            targets = check_targets(cells, stats, args.catalogs)
            hook_part = render(cells, stats, targets, info, args, command.strip())
        if args.part == "hook":
            population_part = _kept(before, "population")
        else:
            args.population_load = os.getloadavg()[0]
            found, runs, sizes = prescreen.measure(args.population, args.population_sample, args.workers)
            targets += found
            population_part = prescreen.section(found, runs, sizes, args)
    except (BenchError, OSError, RuntimeError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(hook_part.rstrip("\n") + "\n\n" + population_part, encoding="utf-8")
    for target in targets:
        print(f"{'met ' if target.met else 'MISS'}  {target.name}: {target.measured} ({target.limit})")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
