"""`cds-trials serve` as an operator runs it: a subprocess, its exit status and every line it prints.

A setting that cannot work stops the start with one line naming it, before gunicorn starts a worker; a running
service prints only JSON lines and counts every worker's calls in GET /metrics, across a worker's restart.
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
from pathlib import Path
from typing import Any

import pytest
from auth_support import ISSUER, PUBLIC_BASE_URL, new_ec_key, pinned_issuer, write_issuers

from cds_service.config import DEFAULT_MAPPINGS_DIR

REPO = Path(__file__).resolve().parent.parent
REQUEST_FILE = REPO / "examples" / "requests" / "patient-view-fit-ablation-small-primary.json"
START_TIMEOUT = 60  # seconds; two workers load the catalog and warm up on a busy machine
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
