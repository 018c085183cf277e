"""`cds-trials serve` as an operator runs it: a subprocess, its exit status and every line it prints.

A setting that cannot work stops the start with one line naming it, before gunicorn starts a worker; a running
service prints only JSON lines and counts every worker's calls in GET /metrics, across a worker's restart; a
worker restarted while the database is down boots and serves, and the database is used again once it is back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from auth_support import ISSUER, PUBLIC_BASE_URL, new_ec_key, pinned_issuer, write_issuers
from hung_server import hung_server, one_on_each_worker
from postgres_server import PostgresServer

from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.storage import Storage

REPO = Path(__file__).resolve().parent.parent
REQUEST_FILE = REPO / "examples" / "requests" / "patient-view-fit-ablation-small-primary.json"
START_TIMEOUT = 60  # seconds; two workers load the catalog and warm up on a busy machine
BUSY_SECONDS = 3  # how long a hook call waits on the hung FHIR server (the fetch deadline)
FAILURE_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cds_service.cli import main; main()", "serve", *args]


def clean_environment(**cds: str) -> dict[str, str]:
    """The test process's environment without any CDS_* variable, then these."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    return {**environment, **{f"CDS_{name.upper()}": value for name, value in cds.items()}}


# --- a setting that cannot work: one line, exit status 1, no worker


def _bad_catalog(tmp: Path) -> dict[str, str]:
    catalog = tmp / "catalog"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, catalog)
    (catalog / "trials" / "NCT06903312.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    return {"sandbox": "1", "mappings_dir": str(catalog)}


def _issuers(tmp: Path, *fhir_servers: str) -> str:
    issuer = pinned_issuer(new_ec_key(), fhir_servers=fhir_servers)
    return str(write_issuers(tmp / f"issuers-{len(fhir_servers)}.json", issuer))


def _bad_issuers_file(tmp: Path) -> str:
    (tmp / "broken.json").write_text('{"issuers": [{"iss": 1}]}', encoding="utf-8")
    return str(tmp / "broken.json")


# name -> (settings as CDS_* values given tmp and a busy port, what the line must say)
FAILURES: dict[str, Any] = {
    "no-trusted-issuers": (
        lambda tmp, busy: {"sandbox": "0"},
        ["CDS_TRUSTED_ISSUERS: not set", "CDS_PUBLIC_BASE_URL"],
    ),
    "issuers-file-missing": (
        lambda tmp, busy: {
            "sandbox": "0",
            "trusted_issuers": str(tmp / "nowhere.json"),
            "public_base_url": PUBLIC_BASE_URL,
        },
        ["CDS_TRUSTED_ISSUERS: ", "nowhere.json"],
    ),
    "issuers-file-invalid": (
        lambda tmp, busy: {
            "sandbox": "0",
            "trusted_issuers": _bad_issuers_file(tmp),
            "public_base_url": PUBLIC_BASE_URL,
        },
        ["CDS_TRUSTED_ISSUERS: ", "broken.json is invalid at issuers/0"],
    ),
    "plain-http-fhir-server": (
        lambda tmp, busy: {
            "sandbox": "0",
            "trusted_issuers": _issuers(tmp, "https://fhir.test.example/r4", "http://127.0.0.1:18090"),
            "public_base_url": PUBLIC_BASE_URL,
        },
        ["CDS_TRUSTED_ISSUERS: ", ISSUER, "http://127.0.0.1:18090"],
    ),
    "base-url-not-a-url": (
        lambda tmp, busy: {
            "sandbox": "0",
            "trusted_issuers": _issuers(tmp, "https://fhir.test.example/r4"),
            "public_base_url": "cds.example.org",
        },
        ["CDS_PUBLIC_BASE_URL: ", "'cds.example.org'"],
    ),
    "bad-catalog": (lambda tmp, busy: _bad_catalog(tmp), ["CDS_MAPPINGS_DIR: ", "trials/NCT06903312.yaml"]),
    "cards-dir-missing": (
        lambda tmp, busy: {"sandbox": "1", "cards_dir": str(tmp / "no-cards")},
        ["CDS_CARDS_DIR: "],
    ),
    "database-unreachable": (
        lambda tmp, busy: {"sandbox": "1", "database_url": f"sqlite:///{tmp}/missing-folder/cds.sqlite3"},
        ["CDS_DATABASE_URL: ", "unable to open database file"],
    ),
    "database-url-with-password": (
        lambda tmp, busy: {"sandbox": "1", "database_url": "nosuchdb://cds:hunter2@127.0.0.1/cds"},
        ["CDS_DATABASE_URL: ", "cds:***@127.0.0.1"],
    ),
    "port-in-use": (lambda tmp, busy: {"sandbox": "1", "port": str(busy)}, ["CDS_PORT: ", "in use"]),
    "metrics-port-in-use": (
        lambda tmp, busy: {"sandbox": "1", "port": str(free_port()), "metrics_port": str(busy)},
        ["CDS_METRICS_PORT: ", "in use"],
    ),
    "value-not-a-number": (
        lambda tmp, busy: {"sandbox": "1", "fetch_deadline_seconds": "soon"},
        ["CDS_FETCH_DEADLINE_SECONDS: ", "'soon'"],
    ),
    "value-not-a-boolean": (lambda tmp, busy: {"sandbox": "maybe"}, ["CDS_SANDBOX: "]),
    "log-level-unknown": (lambda tmp, busy: {"sandbox": "1", "log_level": "LOUD"}, ["CDS_LOG_LEVEL: "]),
}


@pytest.fixture(scope="module")
def failed_starts(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.CompletedProcess]]:
    """Every failing start at once (each takes seconds, mostly imports): name -> finished process."""
    tmp = tmp_path_factory.mktemp("failures")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        busy_port = busy.getsockname()[1]

        def start(name: str) -> subprocess.CompletedProcess:
            settings = FAILURES[name][0](tmp, busy_port)
            settings.setdefault("database_url", f"sqlite:///{tmp}/{name}.sqlite3")
            settings.setdefault("port", str(free_port()))
            return subprocess.run(
                serve_command(),
                env=clean_environment(**settings),
                capture_output=True,
                text=True,
                timeout=FAILURE_TIMEOUT,
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            yield dict(zip(FAILURES, pool.map(start, FAILURES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAILURES))
def test_a_setting_that_cannot_work_stops_the_start_with_one_line(failed_starts, name):
    finished = failed_starts[name]
    assert finished.returncode == 1, finished.stderr
    assert finished.stdout == ""
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr  # no traceback, no gunicorn line, no worker started
    assert lines[0].startswith("Error: CDS_")
    for expected in FAILURES[name][1]:
        assert expected in lines[0]
    assert "hunter2" not in lines[0]


# --- a running service: JSON lines only, and metrics of every worker


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def wait_until_up(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url} within {START_TIMEOUT} s")


def metric(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample of the text exposition (0 when absent)."""
    for line in exposition.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if found == labels:
                return float(match.group(3))
    return 0.0


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text(encoding="ascii").split()
    return {int(pid) for pid in children}


def wait_for_workers(master: int, count: int, other_than: set[int]) -> set[int]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pids = worker_pids(master) - other_than
        if len(pids) == count:
            return pids
        time.sleep(0.2)
    raise AssertionError("gunicorn did not start new workers")


@pytest.mark.slow
def test_a_served_service_prints_json_lines_and_counts_every_worker(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    environment = clean_environment(
        sandbox="1",
        today="2026-11-21",
        database_url=f"sqlite:///{tmp_path / 'served.sqlite3'}",
        port=str(port),
        metrics_port=str(metrics_port),
    )
    server = subprocess.Popen(
        serve_command("--workers", "2"),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    body = json.loads(REQUEST_FILE.read_text(encoding="utf-8"))
    patient_id = body["context"]["patientId"]
    try:
        wait_until_up(server, f"{base}/healthz")
        first_workers = wait_for_workers(server.pid, 2, set())
        preflight = urllib.request.Request(
            f"{base}/cds-services",
            method="OPTIONS",
            headers={
                "Origin": "https://sandbox.cds-hooks.org",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        with urllib.request.urlopen(preflight, timeout=30) as answered:
            assert (
                answered.status == 204 and "Authorization" in answered.headers["Access-Control-Allow-Headers"]
            )
        call = f"{base}/cds-services/mrcc-trials?patient={patient_id}"  # a query string is never logged
        for _ in range(3):
            status, answer = post(call, json.dumps(body).encode())
            assert status == 200 and json.loads(answer)["cards"]
        assert (
            metric(get(metrics_url)[1].decode(), "cds_hook_calls_total", service="mrcc-trials", status="200")
            == 3
        )

        for pid in first_workers:  # gunicorn restarts killed workers; their counts stay in the sums
            os.kill(pid, signal.SIGKILL)
        wait_for_workers(server.pid, 2, first_workers)
        wait_until_up(server, f"{base}/healthz")
        for _ in range(2):
            assert post(call, json.dumps(body).encode())[0] == 200
        exposition = get(metrics_url)[1].decode()
        with pytest.raises(urllib.error.HTTPError) as not_here:
            get(f"{base}/metrics")  # with a metrics port, /metrics is served only there
        assert not_here.value.code == 404
        not_here.value.close()
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr[-2000:]

    assert metric(exposition, "cds_hook_calls_total", service="mrcc-trials", status="200") == 5
    assert metric(exposition, "cds_hook_duration_seconds_count", service="mrcc-trials") == 5
    assert (
        metric(
            exposition,
            "cds_cards_total",
            service="mrcc-trials",
            nct_id="NCT06903312",
            verdict="likely-eligible",
        )
        == 5
    )
    assert patient_id not in exposition

    records = [json.loads(line) for line in (stdout + stderr).splitlines()]  # every line is one JSON object
    access = [r for r in records if r["logger"] == "gunicorn.access" and r["method"] == "POST"]
    assert len(access) == 5
    assert {r["request_id"] for r in access} == {body["hookInstance"]}
    assert {r["path"] for r in access} == {"/cds-services/mrcc-trials"}
    assert not any(patient_id in r["message"] for r in records if r["logger"].startswith("gunicorn"))
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in records)
    assert sum("warm-up done" in r["message"] for r in records) >= 2  # gunicorn.conf.py: workers warm up


# --- the database down when a worker (re)starts


@contextmanager
def database_down(server: PostgresServer) -> Iterator[None]:
    """Stop the PostgreSQL server (its clients' connections are closed), and start it again after."""
    server.halt()
    try:
        yield
    finally:
        server.resume()


def status_of(request: urllib.request.Request | str) -> tuple[int, Any]:
    """The status and JSON body of an answer, an error status included."""
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def post_json(url: str, body: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    return status_of(urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}))


def wait_until_ready(server: subprocess.Popen, log_path: Path, pids: set[int]) -> list[str]:
    """Wait until each of these workers has loaded the app and warmed up (fail if the service stops); return
    their "worker ready" lines."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        assert server.poll() is None, f"the service stopped (exit {server.returncode}): {text[-3000:]}"
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        ready = [r for r in records if r["pid"] in pids and r["message"].startswith("worker ready")]
        if {r["pid"] for r in ready} == pids:
            return [r["message"] for r in ready]
        time.sleep(0.2)
    raise AssertionError(f"workers {sorted(pids)} not ready within {START_TIMEOUT} s")


@pytest.mark.slow
def test_workers_restarted_while_the_database_is_down_boot_and_serve(
    tmp_path: Path, postgresql_server: PostgresServer
) -> None:
    """The soak test's failure: gunicorn restarts a worker while the database is down. The new worker must
    boot (building the app needs no connection) and answer hook calls with cards, /healthz 503 and feedback
    503; once the database is back, /healthz answers 200 and feedback is stored, without a restart."""
    database = postgresql_server.create_database()
    database_url = postgresql_server.url(database)
    port = free_port()
    environment = clean_environment(
        sandbox="1",
        today="2026-11-21",
        database_url=database_url,
        port=str(port),
        fetch_deadline_seconds=str(BUSY_SECONDS),
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            serve_command("--workers", "2"), env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    call = f"{base}/cds-services/mrcc-trials"
    body = json.loads(REQUEST_FILE.read_text(encoding="utf-8"))
    try:
        wait_until_up(server, f"{base}/healthz")
        first_workers = wait_for_workers(server.pid, 2, set())
        wait_until_ready(server, log_path, first_workers)
        with database_down(postgresql_server):
            for pid in first_workers:  # so that every worker serving now has booted without the database
                os.kill(pid, signal.SIGKILL)
            replacements = wait_for_workers(server.pid, 2, first_workers)
            booted = wait_until_ready(server, log_path, replacements)
            answers = [post_json(call, body) for _ in range(4)]
            health = status_of(f"{base}/healthz")
            card = answers[0][1]["cards"][0]["uuid"]
            item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z"}
            refused = post_json(f"{call}/feedback", {"feedback": [item]})
        assert all("warm-up done" in line for line in booted), booted
        assert [status for status, _ in answers] == [200] * 4
        assert all(answer["cards"] for _, answer in answers)
        assert health[0] == 503 and health[1]["status"] == "unavailable"
        assert refused[0] == 503 and refused[1]["error"] == "storage-unavailable"

        deadline = time.monotonic() + 10  # the database is back: its next connection works, no restart
        while status_of(f"{base}/healthz")[0] != 200:
            assert time.monotonic() < deadline, "/healthz did not answer 200 once the database was back"
            time.sleep(0.1)

        def store() -> tuple[int, Any]:
            return post_json(f"{call}/feedback", {"feedback": [item]})

        with hung_server() as hung:  # each worker stores the item: stored once, both answer 200
            waiting = {**{key: value for key, value in body.items() if key != "prefetch"}, "fhirServer": hung}
            stored, busy = one_on_each_worker(lambda: post_json(call, waiting), store)
        assert [status for status, _ in busy] == [412, 412]
        assert stored == [(200, {})] * 2
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        feedback_pids = [
            r["pid"] for r in records if r["message"] == "POST /cds-services/<service_id>/feedback -> 200"
        ]
        assert set(feedback_pids[-2:]) == replacements  # each replacement worker reached the database again
        assert post_json(call, body)[0] == 200
        assert worker_pids(server.pid) == replacements  # no worker was restarted to get there

        storage = Storage(database_url, upgrade=False)
        try:
            assert [row["card"] for row in storage.iter_feedback()] == [card]
        finally:
            storage.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        postgresql_server.drop_database(database)
    assert server.returncode == 0, log_path.read_text(errors="replace")[-3000:]
