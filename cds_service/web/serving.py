"""A gunicorn worker's life around the app: warm up before the first call, then a garbage-collection policy.

gunicorn.conf.py installs `post_worker_init` and `post_request`. Each worker, once it has loaded the app:
1. warms up: answers one call of each service, built from the chart shipped in `cds_service/data/` and
   evaluated on the date it was written for, through every stage (request parsing and schema checks, prefetch,
   FHIR validation, facts, the trials, cards, JSON), so that the first EHR call does not pay for lazily
   imported FHIR types and first-use work (about 0.6 s on 2 cores). It writes no database row and no log
   line;
2. freezes the GC: every object alive then (catalog, compiled rules, FHIR model classes) moves to the
   permanent generation, where collections never walk it again;
3. turns automatic collection off and collects the young generations after each response instead
   (`post_request`): a call allocates hundreds of thousands of objects, nearly all freed by reference
   counting, yet they set off many collections while the call runs (measured in bench/PROFILE.md: 25-30% of a
   call's CPU before, about nothing after).
Nothing else is done after a response (the view writes the audit row before it answers): a worker busy after
its response leaves the EHR's next call to the other worker, whose caches are cold (bench/PROFILE.md).
"""

from __future__ import annotations

import gc
import json
import time
from datetime import date
from importlib import resources
from typing import Any

from cds_service import hooks
from cds_service.bundle_file import hook_request_for
from cds_service.fhir import bundles
from cds_service.hook_request import parse_hook_request
from cds_service.web.hooks import STATE_KEY

FULL_COLLECTION_EVERY = 100  # requests; the young generations are collected after every request
WARM_UP_CHART = "data/warm-up-chart.json"
WARM_UP_INSTANCE = "00000000-0000-4000-8000-000000000000"


def post_worker_init(worker: Any) -> None:
    """Warm the worker up, freeze what is alive, and leave collections to `post_request`."""
    started = time.perf_counter()
    try:
        warmed = warm_up(worker.wsgi)
    except Exception:  # the worker still serves: its first call pays the cold start, and the error shows here
        worker.log.exception("warm-up call failed")
        warmed = False
    gc.collect()
    gc.freeze()
    gc.disable()
    worker.log.info(
        "worker ready in %.0f ms (warm-up %s, %d objects frozen)",
        (time.perf_counter() - started) * 1000,
        "done" if warmed else "skipped",
        gc.get_freeze_count(),
    )


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Once the response is written: collect the call's cyclic garbage (a full collection now and then)."""
    gc.collect(2 if worker.nr % FULL_COLLECTION_EVERY == 0 else 1)


def warm_up_chart() -> tuple[list[dict[str, Any]], date]:
    """The shipped warm-up chart's resources and the date it was written for (its Bundle timestamp)."""
    chart = json.loads(resources.files("cds_service").joinpath(WARM_UP_CHART).read_text(encoding="utf-8"))
    return list(bundles.resources(chart)), date.fromisoformat(chart["timestamp"][:10])


def warm_up(app: Any) -> bool:
    """Answer one call of each service of the app on the warm-up chart; False for an app that is not ours."""
    state = getattr(app, "extensions", {}).get(STATE_KEY)
    if state is None:  # not the CDS service (e.g. the benchmark's JSON-only baseline)
        return False
    chart, today = warm_up_chart()
    for service in state.catalog.services:
        request = hook_request_for(service.hook, service.prefetch, chart, WARM_UP_INSTANCE)
        body = json.dumps(
            {
                "hook": request.hook,
                "hookInstance": request.hook_instance,
                "context": dict(request.context),
                "prefetch": dict(request.prefetch),
            }
        ).encode()
        parsed = parse_hook_request(body, {service.hook}, max_depth=state.settings.max_json_depth)
        call = hooks.prepare(parsed, [service], state.settings, today, lambda _: None)
        app.json.dumps({"cards": hooks.answer(call, state.runtime)})
    return True
