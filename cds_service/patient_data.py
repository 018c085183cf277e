"""Patient data of one hook call: the prefetch read as CDS Hooks 2.0 defines it, completed from `fhirServer`.

Per prefetch key of the service:

    key absent                                  -> fetch `{fhirServer}/{template with tokens replaced}`
    null, or a Bundle without entries           -> no data; not fetched
    a Bundle of only informational OperationOutcomes (severity information or warning; Epic's answer to a
      search with no results)                   -> no data; not fetched
    an OperationOutcome, or a Bundle with one of severity error or fatal
                                                -> the EHR failed: fetch
    JSON that is not a FHIR resource            -> the EHR failed: fetch
    searchset Bundle with a `next` link         -> keep its entries, follow `next` on fhirServer
    any other resource or Bundle                -> its resources

Resources arriving under two keys count once (by resourceType/id); entries without id are kept once each.

Raises (cds_service.errors): PreconditionFailed (required data can be neither prefetched nor fetched),
PatientMismatch (the prefetched Patient is not `context.patientId`), TooManyResources (more resources than
`settings.max_resources`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cds_service.catalog import ServiceDefinition
from cds_service.config import Settings
from cds_service.errors import PatientMismatch, PreconditionFailed, TooManyResources
from cds_service.fhir import bundles
from cds_service.fhir_fetch import FetchJob, FetchResult, FhirFetcher, next_link
from cds_service.hook_request import HookRequest

_LABELS = {
    "Patient": "the patient record",
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationStatement": "medication statements",
    "MedicationRequest": "medication requests",
    "MedicationAdministration": "medication administrations",
    "Procedure": "procedures",
}
FAILED_SEVERITIES = frozenset({"error", "fatal"})  # of an OperationOutcome issue: the search failed
_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


@dataclass(frozen=True)
class PatientData:
    resources: tuple[dict[str, Any], ...]  # raw FHIR resources, each once
    notes: tuple[str, ...] = ()  # what could not be read, for the cards
    unavailable: frozenset[str] = frozenset()  # resource types missing or partly read: absence proves nothing


def expand_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Replace the prefetch tokens of a template; None when a token has no value in this request."""
    unresolved = False

    def value_of(match: re.Match[str]) -> str:
        nonlocal unresolved
        value = _token_value(match.group(1), context)
        if value is None:
            unresolved = True
            return ""
        return quote(value, safe="/")

    expanded = _TOKEN.sub(value_of, template)
    return None if unresolved else expanded


def gather_patient_data(request: HookRequest, service: ServiceDefinition, settings: Settings) -> PatientData:
    """Collect the resources of every prefetch key of the service, fetching what the EHR did not send; raise
    PreconditionFailed when a key of `service.required_prefetch` can be neither prefetched nor fetched."""
    templates = service.prefetch
    gathered: dict[str, list[dict[str, Any]]] = {}
    jobs: dict[str, FetchJob] = {}
    notes: dict[str, str] = {}
    _check_patient(request)
    fetcher = _fetcher(request, settings)
    for key, template in templates.items():
        label = _label(template)
        prefetched, next_url = _read_prefetch(key, request)
        if prefetched is not None:
            gathered[key] = prefetched
        if prefetched is None or next_url is not None:
            url = expand_template(template, request.context) if next_url is None else next_url
            pages_left = settings.fhir_max_pages - (0 if next_url is None else 1)
            if url is None:
                notes[key] = f"{_cap(label)} could not be read (the query needs a context value not given)"
            elif fetcher is None:
                notes[key] = _cannot_fetch_note(label, request, partial=prefetched is not None)
            elif pages_left <= 0:
                notes[key] = f"Not all {label} could be read (stopped after {settings.fhir_max_pages} pages)"
            else:
                jobs[key] = FetchJob(url, pages_left)
    _check_required(service, gathered, jobs, notes)
    if fetcher is not None and jobs:
        for key, result in fetcher.fetch_all(jobs).items():
            fetched, failed = _search_result([r for page in result.pages for r in bundles.resources(page)])
            if failed:
                result = FetchResult(result.pages, result.problem or "the server reported an error")
            if result.pages and (fetched or not failed):
                gathered[key] = gathered.get(key, []) + fetched
            if result.problem:
                notes[key] = _fetch_note(_label(templates[key]), result, partial=key in gathered)
        _check_required(service, gathered, {}, notes)
    resources = tuple(unique_resources(gathered[key] for key in templates if key in gathered))
    if len(resources) > settings.max_resources:
        raise TooManyResources(f"the request holds more than {settings.max_resources} FHIR resources")
    unavailable = frozenset(_resource_type(templates[key]) for key in notes)
    return PatientData(resources, tuple(notes.values()), unavailable)


def _read_prefetch(key: str, request: HookRequest) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Interpret one prefetch value: (resources or None when it must be fetched, next link to follow)."""
    if key not in request.prefetch:
        return None, None
    value = request.prefetch[key]
    if value is None:
        return [], None
    if not isinstance(value.get("resourceType"), str) or value["resourceType"] == "OperationOutcome":
        return None, None
    if value["resourceType"] != "Bundle":
        return [value], None
    resources, failed = _search_result(list(bundles.resources(value)))
    if failed:
        return None, None
    return resources, next_link(value)


def _search_result(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The resources of a search, without its OperationOutcomes, and whether one of those says it failed.

    An OperationOutcome of severity `information` or `warning` beside (or instead of) the results is a note
    about the search: Epic answers a search with no results by a searchset holding only one ("Resource request
    returns no results"). Only an issue of severity `error` or `fatal` means the search failed.
    """
    resources = [r for r in entries if r["resourceType"] != "OperationOutcome"]
    failed = any(
        isinstance(issue, Mapping) and issue.get("severity") in FAILED_SEVERITIES
        for r in entries
        if r["resourceType"] == "OperationOutcome" and isinstance(r.get("issue"), list)
        for issue in r["issue"]
    )
    return resources, failed


def unique_resources(groups: Iterable[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Yield each resource once by resourceType/id; resources without id are all kept."""
    seen: set[tuple[str, str]] = set()
    for group in groups:
        for resource in group:
            resource_id = resource.get("id")
            if isinstance(resource_id, str) and resource_id:
                identity = (resource["resourceType"], resource_id)
                if identity in seen:
                    continue
                seen.add(identity)
            yield resource


def _fetcher(request: HookRequest, settings: Settings) -> FhirFetcher | None:
    """A fetcher when FHIR access is allowed: a token was given, or the open sandbox mode is on."""
    if request.fhir_server is None or (request.access_token is None and not settings.sandbox):
        return None
    return FhirFetcher(
        request.fhir_server, request.access_token, deadline_seconds=settings.fetch_deadline_seconds
    )


def _check_required(
    service: ServiceDefinition,
    gathered: Mapping[str, list[dict[str, Any]]],
    pending: Mapping[str, FetchJob],
    notes: Mapping[str, str],
) -> None:
    for key in service.required_prefetch:
        if key not in gathered and key not in pending:
            label = _label(service.prefetch[key])
            raise PreconditionFailed(notes.get(key) or f"{_cap(label)} could not be read.")


def _check_patient(request: HookRequest) -> None:
    """Refuse a prefetched Patient other than the context patient: never mix in another patient's data."""
    patient = request.prefetch.get("patient")
    if isinstance(patient, Mapping) and patient.get("resourceType") == "Patient":
        if patient.get("id") not in (None, request.patient_id):
            raise PatientMismatch("$.prefetch.patient.id: the Patient is not context.patientId")


def _cannot_fetch_note(label: str, request: HookRequest, partial: bool) -> str:
    why = "no FHIR server was given" if request.fhir_server is None else "no FHIR access token was given"
    if partial:
        return f"Not all {label} could be read (only the first page was prefetched, and {why})"
    return f"{_cap(label)} could not be read (missing from the prefetch, and {why})"


def _fetch_note(label: str, result: FetchResult, partial: bool) -> str:
    if partial:
        return f"Not all {label} could be read from the FHIR server ({result.problem})"
    return f"{_cap(label)} could not be read from the FHIR server ({result.problem})"


def _token_value(token: str, context: Mapping[str, Any]) -> str | None:
    if token.startswith("context."):
        value = context.get(token.removeprefix("context."))
        return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    resource_type = _USER_TOKENS.get(token)
    user = context.get("userId")
    if resource_type is None or not isinstance(user, str) or not user.startswith(resource_type + "/"):
        return None
    return user.removeprefix(resource_type + "/")


def _resource_type(template: str) -> str:
    return re.split(r"[/?]", template, maxsplit=1)[0]


def _label(template: str) -> str:
    resource_type = _resource_type(template)
    return _LABELS.get(resource_type, f"{resource_type} resources")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
