"""Storage under load, with real gunicorn: 2 sync worker processes sharing one SQLite database.

Feedback posted from many threads (with repeats) is stored exactly once per distinct item, and a JWT
replayed in parallel is accepted exactly once even when the copies land on different workers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from auth_support import (
    FHIR_SERVER,
    PUBLIC_BASE_URL,
    SERVICE_ID,
    bearer_header,
    claims_for,
    fhir_authorization,
    hook_body,
    new_ec_key,
    pinned_issuer,
    sign,
    write_issuers,
)
from hung_server import hung_server, one_on_each_worker
from test_quiet_cards_service import likely_version

from cds_service.config import REPO_ROOT
from cds_service.storage import Storage

pytestmark = pytest.mark.slow

GUNICORN = Path(sys.executable).with_name("gunicorn")
FEEDBACK = f"/cds-services/{SERVICE_ID}/feedback"
THREADS = 16
ITEMS_PER_THREAD = 25
KEY = new_ec_key("ec-1")
FEEDBACK_ROUTE = "/cds-services/<service_id>/feedback"  # as the request log names it
BUSY_SECONDS = 3  # how long a hook call waits on the hung FHIR server (the fetch deadline)
FHIR_AUTH = fhir_authorization()


@contextmanager
def gunicorn(tmp_path: Path, **cds_env: str) -> Iterator[str]:
    """Serve wsgi:app with 2 sync workers on a free 127.0.0.1 port; yield its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    port = listener.getsockname()[1]
    env = {name: value for name, value in os.environ.items() if not name.startswith("CDS_")}
    env.update(
        {"CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.sqlite3'}", "CDS_TODAY": "2026-11-21", **cds_env}
    )
    command = [
        str(GUNICORN),
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--bind",
        f"fd://{listener.fileno()}",
    ]
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [*command, "--chdir", str(REPO_ROOT), "wsgi:app"],
        env=env,
        pass_fds=(listener.fileno(),),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, server, tmp_path / "gunicorn.log")
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()
        log.close()


def _wait_until_ready(base_url: str, server: subprocess.Popen, log_path: Path) -> None:
    """Wait until both workers have built the app (each logs JSON lines with its pid) and /healthz answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            healthy = requests.get(f"{base_url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:  # workers still importing: connection accepted, no answer yet
            healthy = False
        if healthy and len({line["pid"] for line in _json_lines(log_path)}) == 2:
            return
        time.sleep(0.2)
    pytest.fail("gunicorn did not become ready within 60 s")


def _json_lines(log_path: Path) -> list[dict]:
    """The service's JSON log lines (gunicorn's own lines, JSON too, are left out)."""
    lines = [json.loads(line) for line in log_path.read_text(errors="replace").splitlines()]
    return [line for line in lines if not line["logger"].startswith("gunicorn.")]


def _item(n: int) -> dict:
    return {
        "card": f"00000000-0000-4000-8000-{n:012d}",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-21T10:05:31Z",
    }


def test_feedback_from_many_threads_is_stored_once_per_distinct_item(tmp_path):
    # Each thread posts 25 items one by one; thread t repeats half the items of thread t - 1.
    plans = [[(t * ITEMS_PER_THREAD // 2 + i) for i in range(ITEMS_PER_THREAD)] for t in range(THREADS)]
    distinct = {n for plan in plans for n in plan}
    assert len(distinct) < THREADS * ITEMS_PER_THREAD  # the plan does repeat items
    with gunicorn(tmp_path, CDS_SANDBOX="1") as base_url:

        def post_all(plan: list[int]) -> list[int]:
            with requests.Session() as session:
                return [
                    session.post(base_url + FEEDBACK, json={"feedback": [_item(n)]}, timeout=30).status_code
                    for n in plan
                ]

        with ThreadPoolExecutor(THREADS) as pool:
            statuses = [status for result in pool.map(post_all, plans) for status in result]
    assert Counter(statuses) == {200: THREADS * ITEMS_PER_THREAD}
    storage = Storage(f"sqlite:///{tmp_path / 'cds.sqlite3'}")
    try:
        stored = [row["card"] for row in storage.iter_feedback()]
    finally:
        storage.close()
    assert sorted(stored) == sorted(_item(n)["card"] for n in distinct)


def _race(url: str, body: dict, headers: dict, copies: int) -> Counter:
    """POST the same request `copies` times at once; count the answers by status."""
    start = threading.Barrier(copies)

    def send(_: int) -> int:
        start.wait()
        return requests.post(url, json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(copies) as pool:
        return Counter(pool.map(send, range(copies)))


def _secure_env(tmp_path: Path, fhir_server: str) -> dict[str, str]:
    issuers = write_issuers(tmp_path / "issuers.json", pinned_issuer(KEY, fhir_servers=(fhir_server,)))
    return {
        "CDS_TRUSTED_ISSUERS": str(issuers),
        "CDS_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "CDS_FETCH_DEADLINE_SECONDS": str(BUSY_SECONDS),
    }


def _feedback(base_url: str, token: str) -> requests.Response:
    body = {"feedback": [_item(uuid.uuid4().int % 10**12)]}
    return requests.post(base_url + FEEDBACK, json=body, headers=bearer_header(token), timeout=30)


def test_a_jwt_replayed_in_parallel_is_accepted_once(tmp_path, database_url):
    """On SQLite and PostgreSQL, a new database: gunicorn's master makes the schema, then workers start."""
    copies = 8
    env = {**_secure_env(tmp_path, FHIR_SERVER), "CDS_DATABASE_URL": database_url}
    with gunicorn(tmp_path, **env) as base_url:
        for _ in range(3):  # several rounds of copies racing on both workers
            token = sign(claims_for(PUBLIC_BASE_URL + FEEDBACK), KEY)
            body = {"feedback": [_item(uuid.uuid4().int % 10**12)]}
            assert _race(base_url + FEEDBACK, body, bearer_header(token), copies) == {200: 1, 401: copies - 1}
    rejected = [
        line for line in _json_lines(tmp_path / "gunicorn.log") if line.get("reason") == "jti_replayed"
    ]
    assert len(rejected) == 3 * (copies - 1)


def test_a_jwt_replayed_on_the_other_worker_is_rejected(tmp_path):
    """Each worker is kept busy in turn by a hook call waiting on a hung FHIR server, so the two copies of the
    token are served by different workers."""
    with hung_server(scheme="https") as hung, gunicorn(tmp_path, **_secure_env(tmp_path, hung)) as base_url:
        service = f"/cds-services/{SERVICE_ID}"
        body = {**hook_body(prefetch=None), "fhirServer": hung, "fhirAuthorization": FHIR_AUTH}

        def busy_call() -> requests.Response:
            token = sign(claims_for(PUBLIC_BASE_URL + service), KEY)
            return requests.post(base_url + service, json=body, headers=bearer_header(token), timeout=30)

        replayed = sign(claims_for(PUBLIC_BASE_URL + FEEDBACK), KEY)
        (first, second), busy = one_on_each_worker(busy_call, lambda: _feedback(base_url, replayed))
    assert (first.status_code, second.status_code) == (200, 401)
    assert [response.status_code for response in busy] == [412, 412]
    answers = [line for line in _json_lines(tmp_path / "gunicorn.log") if line.get("path") == FEEDBACK_ROUTE]
    assert [line["status"] for line in answers] == [200, 401]
    assert answers[0]["pid"] != answers[1]["pid"], "the copies were served by one worker"


def test_an_answered_card_stays_quiet_on_both_workers_and_after_a_restart(tmp_path):
    """Quiet cards with real workers: dismissed once, the card is away on every worker and after a restart,
    back when its verdict improves, and back once an operator lifts it (`cds-trials feedback unquiet`).
    (CDS_QUIET_DAYS passing: tests/test_quiet_cards_service.py.)"""
    request = json.loads(
        (REPO_ROOT / "examples" / "requests" / "patient-view-histology-not-coded.json").read_text()
    )
    hook_url = f"/cds-services/{SERVICE_ID}"
    log_path = tmp_path / "gunicorn.log"

    def trials_on_each_worker(base_url: str, hung: str, request: dict = request) -> list[set[str]]:
        """The trials of the cards of one call on each worker (the other kept busy by a hook call waiting
        on the hung FHIR server)."""

        def call(**extra: str) -> requests.Response:
            body = {**request, "hookInstance": str(uuid.uuid4()), **extra}
            return requests.post(base_url + hook_url, json=body, timeout=30)

        def busy_call() -> requests.Response:
            body = {key: value for key, value in request.items() if key != "prefetch"}
            return requests.post(base_url + hook_url, json={**body, "fhirServer": hung}, timeout=30)

        (first, second), busy = one_on_each_worker(busy_call, call)
        assert [response.status_code for response in busy] == [412, 412]  # each waited until the deadline
        assert (first.status_code, second.status_code) == (200, 200), second.text
        answered = [
            line
            for line in _json_lines(log_path)
            if line["message"].startswith("POST /cds-services/<service_id> -> 200")
        ]
        assert answered[-2]["pid"] != answered[-1]["pid"], "the two calls were served by one worker"
        return [
            {c["extension"]["org.trialmatch.eligibility"]["nctId"] for c in response.json()["cards"]}
            for response in (first, second)
        ]

    env = {"CDS_SANDBOX": "1", "CDS_FETCH_DEADLINE_SECONDS": str(BUSY_SECONDS)}
    with hung_server() as hung, gunicorn(tmp_path, **env) as base_url:
        body = {**request, "hookInstance": str(uuid.uuid4())}
        shown = requests.post(base_url + hook_url, json=body, timeout=30).json()["cards"]
        (card,) = [c for c in shown if c["extension"]["org.trialmatch.eligibility"]["nctId"] == "NCT06903312"]
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-21T09:00:00Z",
            "overrideReason": {"reason": card["overrideReasons"][0]},
        }
        assert requests.post(base_url + FEEDBACK, json={"feedback": [item]}, timeout=30).status_code == 200
        assert all("NCT06903312" not in found for found in trials_on_each_worker(base_url, hung))
    with hung_server() as hung, gunicorn(tmp_path, **env) as base_url:  # restarted on the same database
        assert all("NCT06903312" not in found for found in trials_on_each_worker(base_url, hung))
        improved = likely_version()  # the histology coded: possibly -> likely, the card is back
        assert all("NCT06903312" in found for found in trials_on_each_worker(base_url, hung, improved))
        assert all("NCT06903312" not in found for found in trials_on_each_worker(base_url, hung))
        lifted = subprocess.run(
            [
                sys.executable,
                "-c",
                "from cds_service.cli import main; main()",
                "feedback",
                "unquiet",
                "--patient",
                request["context"]["patientId"],
                "--trial",
                "NCT06903312",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.sqlite3'}"},
            capture_output=True,
            text=True,
        )
        assert lifted.returncode == 0, lifted.stderr
        assert all("NCT06903312" in found for found in trials_on_each_worker(base_url, hung))  # lifted
