"""Where a hook call spends its time: CPU time of each stage, then a pyinstrument profile of whole calls.

    .venv/bin/python -m bench.profile --resources 1000 --trials 1000 [--html profile.html]

Runs in one process on the real app (create_app, sandbox, a temporary database and generated catalog), after
a warm-up call, with the GC handled as gunicorn.conf.py does in a worker (`--gc worker`: frozen after the
warm-up, off during a call, young generations collected between calls) or as by default (`--gc default`).
Stage times are CPU times (time.process_time), the fastest of `--repeat` runs, so that other processes on the
machine hardly change them; bench/PROFILE.md records what they showed.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

from bench.generate import PATIENT_ID, SERVICE_ID, TODAY, generate_catalog, hook_request
from bench.orders import ORDER_SELECT_SERVICE, order_select_request
from cds_service.cards import CardContext
from cds_service.facts.build import build_facts
from cds_service.hook_request import parse_hook_request
from cds_service.patient_data import gather_patient_data
from cds_service.web import create_app


def cpu_ms(step: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Fastest CPU time of `repeat` runs of `step`, in ms, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        result = step()
        best = min(best, time.process_time() - started)
        if not gc.isenabled():  # as gunicorn.conf.py's post_request, outside the timed call
            gc.collect(1)
    return best * 1000, result


def _call(client: Any, service_id: str, body: bytes) -> None:
    """One hook call, its response closed as a WSGI server does once it is sent."""
    answer = client.post(f"/cds-services/{service_id}", data=body, content_type="application/json")
    if answer.status_code != 200:
        raise SystemExit(f"the call failed: HTTP {answer.status_code} {answer.data[:300]!r}")
    answer.close()


def stage_times(app: Any, body: bytes, repeat: int) -> list[tuple[str, float, str]]:
    """CPU time of each stage of one call, run on its own with the previous stage's output."""
    state = app.extensions["cds"]
    service = next(s for s in state.catalog.services if s.id == SERVICE_ID)
    settings, terminology, engine = state.settings, state.catalog.terminology, state.runtime.matcher.engine
    today = settings.current_date()
    rows: list[tuple[str, float, str]] = []

    ms, _ = cpu_ms(lambda: json.loads(body), repeat)
    rows.append(("json.loads of the body (what the baseline does)", ms, f"{len(body) / 1024:.0f} KB"))
    ms, request = cpu_ms(
        lambda: parse_hook_request(body, {service.hook}, max_depth=settings.max_json_depth), repeat
    )
    rows.append(("parse_hook_request (JSON, depth limit, schema)", ms, ""))
    ms, data = cpu_ms(lambda: gather_patient_data(request, service, settings), repeat)
    rows.append(("gather_patient_data (prefetch)", ms, f"{len(data.resources)} resources"))

    def facts_as_the_pipeline_builds_them() -> Any:
        # as pipeline.evaluate does: the engine's read plan (derived from what its rules read) selects the
        # resources, validates only those, and of a repeated measurement only the newest usable value
        return build_facts(data.resources, terminology, today, PATIENT_ID, engine.read_plan)

    ms, facts = cpu_ms(facts_as_the_pipeline_builds_them, repeat)
    read = len(facts.conditions) + sum(len(v) for v in facts.labs.values()) + len(facts.medications)
    rows.append(
        ("build_facts (select, validate with R4B, convert, facts)", ms, f"{read} conditions/labs/meds")
    )
    ms, results = cpu_ms(lambda: engine.evaluate(facts, cards_only=True), repeat)
    rows.append(("Engine.evaluate (cards_only, as a hook call)", ms, f"{len(results)} trials"))
    context = CardContext(patient_id=PATIENT_ID)
    ms, cards = cpu_ms(lambda: state.runtime.matcher.cards.build_all(results, context), repeat)
    rows.append(("cards", ms, f"{len(cards)} cards"))
    client = app.test_client()
    ms, _ = cpu_ms(lambda: _call(client, SERVICE_ID, body), repeat)
    rows.append(("whole patient-view call through Flask (audit row included)", ms, ""))
    order_body = json.dumps(order_select_request(len(data.resources))).encode()
    ms, _ = cpu_ms(lambda: _call(client, ORDER_SELECT_SERVICE, order_body), repeat)
    rows.append(("whole order-select call (bench/orders.py: one warning)", ms, ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7, help="runs per stage (the fastest counts)")
    parser.add_argument("--calls", type=int, default=5, help="whole calls under the profiler")
    parser.add_argument("--html", type=Path, help="also write the profile as HTML here")
    parser.add_argument(
        "--gc", choices=("worker", "default"), default="worker", help="GC handling (see above)"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cds-profile-") as folder:
        tmp = Path(folder)
        catalog = generate_catalog(tmp / "catalog", args.trials)
        started = time.perf_counter()
        app = create_app(
            {
                "SANDBOX": True,
                "TODAY": TODAY.isoformat(),
                "MAPPINGS_DIR": str(catalog),
                "DATABASE_URL": f"sqlite:///{tmp}/profile.sqlite3",
                "LOG_LEVEL": "WARNING",
            }
        )
        print(f"create_app with {args.trials} trials: {time.perf_counter() - started:.2f} s")
        body = json.dumps(hook_request(args.resources)).encode()
        client = app.test_client()
        _call(client, SERVICE_ID, body)  # the warm-up call
        if args.gc == "worker":
            gc.collect()
            gc.freeze()
            gc.disable()
        try:
            print(
                f"\nCPU time per stage, {args.resources} resources, {args.trials} trials, GC {args.gc}"
                f" (fastest of {args.repeat}):"
            )
            for name, ms, note in stage_times(app, body, args.repeat):
                print(f"  {name:<56} {ms:8.1f} ms  {note}")

            profiler = Profiler(interval=0.0005)
            profiler.start()
            for _ in range(args.calls):
                _call(client, SERVICE_ID, body)
                if not gc.isenabled():
                    gc.collect(1)
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False))
            if args.html:
                args.html.write_text(profiler.output_html(), encoding="utf-8")
        finally:
            if args.gc == "worker":  # as before: a caller (a test) goes on in this interpreter
                gc.unfreeze()
                gc.enable()
        app.extensions["cds"].storage.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
