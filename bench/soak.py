"""Load and faults, measured: 10 minutes of patient-view calls against two gunicorn workers on PostgreSQL.

    .venv/bin/python -m bench.soak                      # about 12 minutes; writes bench/soak-results.json
    .venv/bin/python -m bench.soak --minutes 2 --outage-at 40 --kill-at 80    # a short rehearsal

1. A throwaway PostgreSQL server: `initdb` in a temporary folder, listening only on a unix socket there (as
   the `postgres` account when run as root; Debian's `postgresql` is installed with apt-get when missing).
2. `cds-trials serve --workers 2` on 127.0.0.1 in sandbox mode (no JWT: with security on, every call needs the
   database for its replay check, so nothing answers while it is down), `CDS_DATABASE_URL` on that server.
3. The maximum throughput is measured first (closed loop, 4 clients, `--calibrate` seconds), then calls are
   sent open-loop at half of it for `--minutes`, each with its own hookInstance; a feedback item is posted
   every 2 s and retried until it is acknowledged (a 503 is retried after 1 s, as a client would).
4. During the run the database is stopped for 30 s (`--outage-at`) and one worker is killed (`--kill-at`).

Recorded per minute: calls, errors (anything but 200 with cards), p50/p99 latency; worker RSS
every 5 s; what each fault did (hook answers and feedback statuses while the database was down, time for
gunicorn to replace the killed worker, calls that failed meanwhile); at the end, every acknowledged feedback
item must be in the database exactly once. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUEST_FILE = REPO_ROOT / "examples" / "requests" / "patient-view-fit-ablation-small-primary.json"
RESULTS_FILE = REPO_ROOT / "bench" / "soak-results.json"
SERVICE = "/cds-services/mrcc-trials"
PG_PORT = 5432  # only names the socket file inside the server's folder
RSS_EVERY = 5.0
FEEDBACK_EVERY = 2.0


# --- PostgreSQL


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found and shutil.which("initdb") is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"], check=True
        )
        return _pg_bindir()
    if found:
        return found[-1].parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb") or "").parent
    raise SystemExit("initdb not found: install Debian's postgresql")


class Postgres:
    """A throwaway cluster in a temporary folder, reachable only through its unix socket."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="cds-soak-pg-"))
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C")
        self.start()
        self._pg("createdb", "-h", str(self.folder), "-p", str(PG_PORT), "-U", "postgres", "cds")

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/cds?host={self.folder}&port={PG_PORT}"

    def start(self) -> None:
        options = f"-k {self.folder} -p {PG_PORT} -c listen_addresses=''"
        log = self.folder / "server.log"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-o", options, "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _pg(self, program: str, *args: str) -> None:
        command = [*self.run_as, str(self.bindir / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


# --- the service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def service(database_url: str, log_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_SANDBOX="1", CDS_TODAY="2026-11-21", CDS_DATABASE_URL=database_url, CDS_PORT=str(port))
    cli = Path(sys.executable).with_name("cds-trials")
    with log_path.open("wb") as log:
        server = subprocess.Popen([str(cli), "serve", "--workers", "2"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while len(workers(server.pid)) < 2 or _get(port, "/healthz")[0] != 200:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the service did not start; see {log_path}")
                time.sleep(0.5)
            time.sleep(5)  # both workers warm up before they take calls
            yield port, server
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


def workers(master: int) -> list[int]:
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- calls


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        return _request(port, "GET", path)
    except OSError:
        return 0, b""


@dataclass
class Call:
    at: float  # seconds since the start of the run
    latency: float
    status: int  # 0: no HTTP answer (connection refused or reset)
    cards: int


def hook_call(port: int, template: dict[str, Any], started: float) -> Call:
    body = dict(template, hookInstance=str(uuid.uuid4()))
    sent = time.monotonic()
    try:
        status, answer = _request(port, "POST", SERVICE, json.dumps(body).encode())
        cards = len(json.loads(answer).get("cards", [])) if status == 200 else 0
    except (OSError, http.client.HTTPException, ValueError):
        status, cards = 0, 0
    return Call(sent - started, time.monotonic() - sent, status, cards)


def calibrate(port: int, template: dict[str, Any], seconds: float, clients: int = 4) -> float:
    """Closed loop with `clients` threads: calls answered with cards per second."""
    stop = time.monotonic() + seconds
    started = time.monotonic()

    def loop() -> int:
        done = 0
        while time.monotonic() < stop:
            done += hook_call(port, template, started).cards > 0
        return done

    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(lambda _: loop(), range(clients)))
    return total / seconds


@dataclass
class Feedback:
    card: str
    first_at: float
    statuses: list[int] = field(default_factory=list)
    acknowledged_at: float | None = None


def post_feedback(port: int, item: Feedback, started: float, until: float) -> None:
    """Post one item until it is acknowledged (200), retrying a 503 or a failed connection after 1 s."""
    body = json.dumps(
        {
            "feedback": [
                {"card": item.card, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z"}
            ]
        }
    ).encode()
    while time.monotonic() < until:
        try:
            status = _request(port, "POST", f"{SERVICE}/feedback", body)[0]
        except (OSError, http.client.HTTPException):
            status = 0
        item.statuses.append(status)
        if status == 200:
            item.acknowledged_at = time.monotonic() - started
            return
        time.sleep(1.0)


# --- the run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def at(moment: float, started: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(max(0.0, started + moment - time.monotonic()), action)
    timer.daemon = True
    timer.start()
    return timer


def run(args: argparse.Namespace) -> dict[str, Any]:
    template = json.loads(REQUEST_FILE.read_text(encoding="utf-8"))
    postgres = Postgres()
    log_path = Path(tempfile.mkdtemp(prefix="cds-soak-")) / "service.log"
    try:
        with service(postgres.url, log_path) as (port, server):
            maximum = calibrate(port, template, args.calibrate)
            rate = maximum * args.load
            print(
                f"maximum {maximum:.1f} calls/s; soak at {rate:.1f} calls/s for {args.minutes} min",
                flush=True,
            )
            run = Soak(args, port, server, postgres, log_path)
            results = run.go(template, rate) | {"maximum_calls_per_s": round(maximum, 1)}
            print(f"service log: {log_path}", flush=True)
            return results
    finally:
        postgres.remove()


class Soak:
    """One soak run: the open-loop calls, the feedback client, the samplers and the two faults."""

    def __init__(
        self,
        args: argparse.Namespace,
        port: int,
        server: subprocess.Popen[bytes],
        postgres: Postgres,
        log_path: Path,
    ) -> None:
        self.args, self.port, self.server, self.postgres, self.log_path = (
            args,
            port,
            server,
            postgres,
            log_path,
        )
        self.started = time.monotonic()
        self.until = self.started + args.minutes * 60
        self.feedback: list[Feedback] = []
        self.rss: list[tuple[float, int, float]] = []  # (at, pid, MB)
        self.health: list[tuple[float, int]] = []
        self.events: dict[str, Any] = {}

    def now(self) -> float:
        return time.monotonic() - self.started

    def outage(self) -> None:
        self.events["db_stopped_at"] = round(self.now(), 1)
        self.postgres.stop()
        time.sleep(self.args.outage_seconds)
        self.postgres.start()
        self.events["db_started_at"] = round(self.now(), 1)

    def kill(self) -> None:
        before = set(workers(self.server.pid))
        victim = min(before)
        killed_at = self.now()
        self.events.update(killed_pid=victim, killed_at=round(killed_at, 1))
        os.kill(victim, signal.SIGKILL)
        while not set(workers(self.server.pid)) - before:
            time.sleep(0.05)
        replacement = (set(workers(self.server.pid)) - before).pop()
        self.events.update(
            replacement_pid=replacement, replacement_forked_after=round(self.now() - killed_at, 2)
        )
        marker = f'"pid":{replacement}'.encode()
        while not any(
            marker in line and b"warm-up done" in line for line in self.log_path.read_bytes().splitlines()
        ):
            time.sleep(0.1)
        self.events["replacement_ready_after"] = round(self.now() - killed_at, 2)

    def sample(self) -> None:
        while time.monotonic() < self.until:
            now = self.now()
            for pid in workers(self.server.pid):
                mb = rss_mb(pid)
                if mb is not None:
                    self.rss.append((now, pid, mb))
            self.health.append((now, _get(self.port, "/healthz")[0]))
            time.sleep(RSS_EVERY)

    def post_feedback_items(self, pool: ThreadPoolExecutor) -> None:
        while time.monotonic() < self.until:
            item = Feedback(str(uuid.uuid4()), self.now())
            self.feedback.append(item)
            pool.submit(post_feedback, self.port, item, self.started, self.until + 60)
            time.sleep(FEEDBACK_EVERY)

    def go(self, template: dict[str, Any], rate: float) -> dict[str, Any]:
        timers = [
            at(self.args.outage_at, self.started, self.outage),
            at(self.args.kill_at, self.started, self.kill),
        ]
        threading.Thread(target=self.sample, daemon=True).start()
        with ThreadPoolExecutor(32) as pool, ThreadPoolExecutor(8) as feedback_pool:
            threading.Thread(target=self.post_feedback_items, args=(feedback_pool,), daemon=True).start()
            futures = []
            n = 0
            while (scheduled := self.started + n / rate) < self.until:  # open loop: call n leaves at n / rate
                time.sleep(max(0.0, scheduled - time.monotonic()))
                futures.append(pool.submit(hook_call, self.port, template, self.started))
                n += 1
            calls = [future.result() for future in futures]
        for timer in timers:
            timer.join()
        return self.summary(rate, calls, stored_feedback(self.postgres.url))

    def summary(self, rate: float, calls: list[Call], stored: dict[str, int]) -> dict[str, Any]:
        outage = (self.events.get("db_stopped_at", -1), self.events.get("db_started_at", -1))
        kill_window = (self.events.get("killed_at", -1), self.events.get("killed_at", -1) + 10)
        minutes = []
        for minute in range(self.args.minutes):
            of_minute = [c for c in calls if minute * 60 <= c.at < (minute + 1) * 60]
            answered = [c.latency * 1000 for c in of_minute if c.status == 200 and c.cards]
            minutes.append(
                {
                    "minute": minute + 1,
                    "calls": len(of_minute),
                    "errors": sum(not (c.status == 200 and c.cards) for c in of_minute),
                    "p50_ms": round(percentile(answered, 0.50), 1),
                    "p99_ms": round(percentile(answered, 0.99), 1),
                }
            )
        during_outage = [c for c in calls if outage[0] <= c.at < outage[1]]
        during_kill = [c for c in calls if kill_window[0] <= c.at < kill_window[1]]
        acknowledged = [f for f in self.feedback if f.acknowledged_at is not None]
        refused = [f for f in self.feedback if 503 in f.statuses]
        return {
            "rate_calls_per_s": round(rate, 1),
            "minutes": minutes,
            "calls": len(calls),
            "errors": sum(m["errors"] for m in minutes),
            "errors_by_status": _count(str(c.status) for c in calls if not (c.status == 200 and c.cards)),
            "p50_ms": round(percentile([c.latency * 1000 for c in calls], 0.50), 1),
            "p99_ms": round(percentile([c.latency * 1000 for c in calls], 0.99), 1),
            "calls_over_500_ms": sum(c.latency > 0.5 for c in calls),
            "rss_mb": _rss_growth(
                self.rss, self.events.get("killed_pid"), self.events.get("replacement_pid")
            ),
            "events": self.events,
            "database_outage": {
                "hook_calls": len(during_outage),
                "answered_with_cards": sum(c.status == 200 and c.cards > 0 for c in during_outage),
                "p99_ms": round(percentile([c.latency * 1000 for c in during_outage], 0.99), 1),
                "healthz": _count(str(status) for t, status in self.health if outage[0] <= t < outage[1]),
                "feedback_items_refused_503": len(refused),
                "feedback_statuses": _count(str(s) for f in refused for s in f.statuses),
            },
            "worker_kill": {
                "hook_calls_in_10s": len(during_kill),
                "failed": _count(str(c.status) for c in during_kill if not (c.status == 200 and c.cards)),
            },
            "feedback": {
                "posted": len(self.feedback),
                "acknowledged": len(acknowledged),
                "stored_once": sum(stored.get(f.card) == 1 for f in acknowledged),
                "missing_or_duplicated": [f.card for f in acknowledged if stored.get(f.card) != 1],
            },
        }


def _count(values: Iterator[str] | Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _rss_growth(samples: list[tuple[float, int, float]], killed: int | None, replacement: int | None) -> dict:
    """Per worker: RSS in its first and last full minute of samples (after a minute of warm calls)."""
    growth = {}
    for pid in sorted({pid for _, pid, _ in samples}):
        own = [(t, mb) for t, p, mb in samples if p == pid]
        first_t, last_t = own[0][0], own[-1][0]
        if last_t - first_t < 150:
            continue  # too short a life to say anything about growth
        early = [mb for t, mb in own if first_t + 60 <= t < first_t + 120]
        late = [mb for t, mb in own if t >= last_t - 60]
        role = "replacement" if pid == replacement else "killed" if pid == killed else "survivor"
        growth[f"{role} {pid}"] = {
            "early_mb": round(statistics.mean(early), 1),
            "late_mb": round(statistics.mean(late), 1),
            "growth_pct": round(100 * (statistics.mean(late) / statistics.mean(early) - 1), 1),
            "minutes_sampled": round((last_t - first_t) / 60, 1),
        }
    return growth


def stored_feedback(database_url: str) -> dict[str, int]:
    """card uuid -> rows stored for it."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT card_uuid, count(*) FROM feedback GROUP BY 1"))
            return {row[0]: row[1] for row in rows}
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--load", type=float, default=0.5, help="fraction of the measured maximum throughput")
    parser.add_argument("--calibrate", type=float, default=30.0, help="seconds of the maximum-throughput run")
    parser.add_argument("--outage-at", type=float, default=180.0, help="second at which the database stops")
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--kill-at", type=float, default=420.0, help="second at which a worker is killed")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    results = run(args)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "minutes"}, indent=2))
    for row in results["minutes"]:
        print(row)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
