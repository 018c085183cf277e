"""CDS Hooks endpoints: discovery, service calls, feedback, health. Views validate, call the core, answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from cds_service import hooks
from cds_service.catalog import Catalog, ServiceDefinition
from cds_service.config import Settings
from cds_service.errors import UnknownService
from cds_service.hook_request import parse_feedback, parse_hook_request
from cds_service.hooks import RememberWarned, Runtime, Warned
from cds_service.logs import bind_request_id
from cds_service.storage import Storage
from cds_service.web.auth import authorize_fhir_server
from cds_service.web.metrics import count_cards, count_feedback

log = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__)

STATE_KEY = "cds"


@dataclass(frozen=True)
class ServiceState:
    """What the views need, built once by create_app."""

    settings: Settings
    catalog: Catalog
    runtime: Runtime
    storage: Storage


def _state() -> ServiceState:
    state: ServiceState = current_app.extensions[STATE_KEY]
    return state


def _definitions(service_id: str) -> list[ServiceDefinition]:
    """Every discovery entry with this id (CDS Hooks lets one id serve several hooks)."""
    definitions = [s for s in _state().catalog.services if s.id == service_id]
    if not definitions:
        raise UnknownService(f"no CDS service with id {service_id!r}; GET /cds-services lists them")
    return definitions


def discovery_entry(service: ServiceDefinition) -> dict[str, Any]:
    entry = {
        "hook": service.hook,
        "id": service.id,
        "title": service.title,
        "description": service.description,
        "prefetch": dict(service.prefetch),
        "usageRequirements": service.usage_requirements,
    }
    return {key: value for key, value in entry.items() if value not in (None, "", {}, [])}


@bp.get("/cds-services")
def discovery() -> Response:
    return jsonify(services=[discovery_entry(service) for service in _state().catalog.services])


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    started = time.perf_counter()
    state = _state()
    definitions = _definitions(service_id)
    hook_request = parse_hook_request(
        request.get_data(), {d.hook for d in definitions}, max_depth=state.settings.max_json_depth
    )
    bind_request_id(hook_request.hook_instance)
    today = state.settings.current_date()
    call = hooks.prepare(hook_request, definitions, state.settings, today, authorize_fhir_server)
    cards = hooks.answer(call, state.runtime)
    count_cards(service_id, cards)
    duration_ms = round((time.perf_counter() - started) * 1000)
    _record_audit(
        state.storage,
        hook_instance=hook_request.hook_instance,
        service_id=service_id,
        hook=hook_request.hook,
        patient_id=hook_request.patient_id,
        cards=cards,
        catalog_version=state.catalog.version,
        duration_ms=duration_ms,
    )
    log.info(
        "hook answered with %d card(s)",
        len(cards),
        extra={
            "service": service_id,
            "hook": hook_request.hook,
            "patient_id": hook_request.patient_id,
            "resources": len(call.data.resources),
            "duration_ms": duration_ms,
        },
    )
    return jsonify(cards=cards)


def quiet_cards(storage: Storage, settings: Settings) -> Callable[[str], Mapping[str, str]]:
    """What quiets a patient's cards: answered cards (feedback) within CDS_QUIET_DAYS, by real time since that
    is when feedback was received. If the database does not answer, every card is shown (and it is logged)."""

    def quieted(patient_id: str) -> Mapping[str, str]:
        try:
            return storage.quieted(patient_id, datetime.now(UTC), settings.quiet_days)
        except Exception:
            log.exception("quiet cards could not be read: every card is shown")
            return {}

    return quieted


def order_warnings(storage: Storage) -> tuple[Warned, RememberWarned]:
    """What order-sign must not repeat (the warnings order-select showed the patient that day), and how
    order-select remembers them. If the database does not answer, every warning is shown (it is logged)."""

    def warned(patient_id: str, day: date) -> Collection[tuple[str, str]]:
        try:
            return storage.warned(patient_id, day)
        except Exception:
            log.exception("order warnings shown before could not be read: every warning is shown")
            return frozenset()

    def remember(patient_id: str, day: date, shown: Collection[tuple[str, str]]) -> None:
        try:
            storage.remember_warnings(patient_id, day, shown)
        except Exception:
            log.exception("order warnings shown could not be remembered: order-sign may repeat them")

    return warned, remember


def _record_audit(storage: Storage, **row: Any) -> None:
    """Write the audit row of a call before it is answered (nothing is left to do after the response, see
    web/serving.py); a failure is logged and the cards are answered all the same."""
    try:
        storage.record_audit(**row)
    except Exception:
        log.exception(
            "the audit row of this call could not be written",
            extra={"service": row["service_id"], "request_id": row["hook_instance"]},
        )


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    _definitions(service_id)
    state = _state()
    items = parse_feedback(request.get_data(), max_depth=state.settings.max_json_depth)
    stored = state.storage.record_feedback(service_id, items)
    count_feedback(service_id, items)
    log.info("feedback stored: %d new of %d item(s)", stored, len(items), extra={"service": service_id})
    return jsonify({})


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    state = _state()
    if not state.storage.ping():
        return jsonify(status="unavailable", message="the database does not answer"), 503
    return jsonify(status="ok", catalogVersion=state.catalog.version, trials=len(state.catalog.trials)), 200
