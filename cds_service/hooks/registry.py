"""The registry of CDS Hooks this service answers: each hook name -> its handler and its context schema.

A handler is registered next to its code with `@hook(name, context=SCHEMA)`; `mappings/services.yaml` lists
the services (id, hook, prefetch) that discovery shows. A handler gets a `HookCall` (the validated request,
its service, the patient data read from the prefetch or the FHIR server, and today) and the `Runtime` that
every call shares, and returns the cards.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from jsonschema import Draft202012Validator

from cds_service.catalog import Problem, ServiceDefinition
from cds_service.config import Settings
from cds_service.errors import CatalogError
from cds_service.hook_request import HookRequest, check
from cds_service.patient_data import PatientData, gather_patient_data
from cds_service.pipeline import Matcher

Card = dict[str, Any]


@dataclass(frozen=True)
class HookCall:
    """One service call, ready for its handler."""

    request: HookRequest
    service: ServiceDefinition
    data: PatientData
    today: date


def never_quiet(patient_id: str) -> Mapping[str, str]:
    """No card is quiet (no feedback store: the command line, the warm-up)."""
    return {}


# (patient id, day) -> (NCT number, orders digest) of each order warning order-select showed that day
Warned = Callable[[str, date], Collection[tuple[str, str]]]
# remembers the order warnings order-select showed: (patient id, day, [(NCT number, orders digest)])
RememberWarned = Callable[[str, date, Collection[tuple[str, str]]], None]


def never_warned(patient_id: str, day: date) -> Collection[tuple[str, str]]:
    """No order warning was shown before (no store: the command line, the warm-up)."""
    return frozenset()


def forget_warnings(patient_id: str, day: date, shown: Collection[tuple[str, str]]) -> None:
    """Keep no order warning (no store)."""


@dataclass(frozen=True)
class Runtime:
    """What every call shares: compiled catalog and card texts, settings, the feedback store's view."""

    matcher: Matcher
    settings: Settings
    # patient id -> {NCT number: verdict of the card a clinician answered lately}: those cards stay quiet
    quieted: Callable[[str], Mapping[str, str]] = field(default=never_quiet)
    warned: Warned = field(default=never_warned)  # the order warnings order-sign does not repeat
    remember_warned: RememberWarned = field(default=forget_warnings)


class Handler(Protocol):
    def __call__(self, call: HookCall, runtime: Runtime) -> list[Card]: ...


@dataclass(frozen=True)
class Hook:
    name: str
    handler: Handler
    context: Mapping[str, Any]  # JSON Schema of the request's `context` for this hook
    validator: Draft202012Validator


HOOKS: dict[str, Hook] = {}


def hook(name: str, *, context: Mapping[str, Any]) -> Callable[[Handler], Handler]:
    """Register a handler for the hook `name`, with the JSON Schema its request's `context` must match."""
    Draft202012Validator.check_schema(context)

    def register(handler: Handler) -> Handler:
        HOOKS[name] = Hook(name, handler, context, Draft202012Validator(context))
        return handler

    return register


def prepare(
    request: HookRequest,
    services: Sequence[ServiceDefinition],
    settings: Settings,
    today: date,
    authorize_fhir_server: Callable[[str | None], None],
) -> HookCall:
    """Check a parsed request's context against its hook, then read its patient data (prefetch, else fetch).

    `services` are the discovery entries of the service id called (one per hook it answers);
    `authorize_fhir_server` raises when the caller may not send its token to the request's FHIR server.
    """
    check(request.context, HOOKS[request.hook].validator, "$.context")
    service = next(s for s in services if s.hook == request.hook)
    authorize_fhir_server(request.fhir_server)
    return HookCall(request, service, gather_patient_data(request, service, settings), today)


def check_services(services: Sequence[ServiceDefinition]) -> None:
    """Raise CatalogError naming each service of `mappings/services.yaml` whose hook no handler answers."""
    problems = [
        Problem(
            "services.yaml",
            f"services/{i}/hook",
            f"unknown hook {s.hook!r} (supported: {', '.join(sorted(HOOKS))})",
        )
        for i, s in enumerate(services)
        if s.hook not in HOOKS
    ]
    if problems:
        raise CatalogError(problems)


def answer(call: HookCall, runtime: Runtime) -> list[Card]:
    """The cards of a prepared call, from its hook's handler."""
    return HOOKS[call.request.hook].handler(call, runtime)
