"""Gunicorn settings of the CDS service: `gunicorn -c gunicorn.conf.py wsgi:app` (also `cds-trials serve`).

Sync workers, one per core: a hook call is CPU-bound (parsing and validating FHIR), so more workers than cores
only queue. Command-line options (`--bind`, `--workers`, ...) override these values.

Each worker, once it has loaded the app and before its first request:
1. warms up: one synthetic patient-view call through every stage (request parsing and schema check, prefetch
   reading, FHIR validation, facts, the trials as a hook call evaluates them, cards, JSON), so that the first
   EHR call does not pay for lazily imported FHIR types and first-use work (about 0.6 s on 2 cores);
2. freezes the GC: every object alive then (catalog, compiled rules, FHIR model classes) moves to the
   permanent generation, where collections never walk it again;
3. turns automatic collection off and collects the young generations after each response instead
   (`post_request`): a call allocates hundreds of thousands of objects, nearly all freed by reference
   counting, yet they set off many collections while the call runs. Measured in bench/PROFILE.md: the GC
   took 25-30% of a call's CPU before (73 ms of 244 ms for 1,000 resources), about nothing after, and what
   the collections after each call find stays under a few hundred objects.
Nothing else is done after a response (the view writes the audit row and frees the call's data before it
answers): a worker busy after its response leaves the EHR's next call to the other worker, whose caches are
cold (bench/PROFILE.md, "Third pass": that cost more than the work it moved off the response).
The synthetic patient is made up here and touches no database and no log line.
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

bind = "127.0.0.1:8080"
workers = os.cpu_count() or 1
worker_class = "sync"
timeout = 60  # also bounds a worker's start: loading and checking the catalog, then the warm-up
control_socket_disable = True  # gunicorn >= 25: one fixed socket path per user; older versions ignore it

STATE_KEY = "cds"  # cds_service.web.hooks.STATE_KEY: where create_app keeps the catalog and the matcher
FULL_COLLECTION_EVERY = 100  # requests; the young generations are collected after every request
WARM_UP_PATIENT = "warm-up-synthetic"


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


def warm_up(app: Any) -> bool:
    """Run one synthetic call per service through every stage of the service; False for another app."""
    state = getattr(app, "extensions", {}).get(STATE_KEY)
    if state is None:  # not the CDS service (e.g. the benchmark's JSON-only baseline)
        return False
    from cds_service.hook_request import parse_hook_request
    from cds_service.patient_data import gather_patient_data

    for service in state.catalog.services:
        body = json.dumps(synthetic_request(service.hook, service.prefetch)).encode()
        request = parse_hook_request(body, {service.hook}, max_depth=state.settings.max_json_depth)
        data = gather_patient_data(request, service.prefetch, state.settings)
        output = state.matcher.match(
            data.resources, request.patient_id, data.notes, data.unavailable, cards_only=True
        )
        app.json.dumps({"cards": output.cards})
    return True


def synthetic_request(hook: str, prefetch: dict[str, str]) -> dict[str, Any]:
    """A small made-up request answering every prefetch key: each resource type the facts stage reads."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in synthetic_resources():
        by_type.setdefault(resource["resourceType"], []).append(resource)
    answers: dict[str, Any] = {}
    for key, template in prefetch.items():
        resource_type = template.split("?")[0].split("/")[0]
        if "?" not in template:
            answers[key] = by_type.get(resource_type, [None])[0]
            continue
        found = by_type.get(resource_type, []) + (
            by_type["Medication"] if resource_type == "MedicationRequest" else []
        )
        answers[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in found],
        }
    return {
        "hook": hook,
        "hookInstance": "00000000-0000-4000-8000-000000000000",
        "context": {"userId": "Practitioner/warm-up", "patientId": WARM_UP_PATIENT},
        "prefetch": answers,
    }


def synthetic_resources() -> list[dict[str, Any]]:
    """One resource of each kind the matcher reads, with codes from mappings/ and today's date."""
    today = time.strftime("%Y-%m-%d")
    subject = {"reference": f"Patient/{WARM_UP_PATIENT}"}
    loinc, snomed, rxnorm, ucum = (
        "http://loinc.org",
        "http://snomed.info/sct",
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "http://unitsofmeasure.org",
    )

    def concept(system: str, code: str) -> dict[str, Any]:
        return {"coding": [{"system": system, "code": code}]}

    def observation(rid: str, code: str, **value: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": rid,
            "meta": {"lastUpdated": f"{today}T08:00:00Z", "profile": ["http://example.org/profile"]},
            "identifier": [{"system": "urn:oid:1.2.3", "value": rid}],
            "status": "final",
            "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
            "code": concept(loinc, code),
            "subject": subject,
            "effectiveDateTime": today,
            "issued": f"{today}T09:00:00Z",
            "performer": [{"reference": "Organization/warm-up", "display": "laboratory"}],
            "note": [{"text": "synthetic"}],
            **value,
        }

    def quantity(value: float, unit: str) -> dict[str, Any]:
        return {"value": value, "unit": unit, "system": ucum, "code": unit}

    return [
        {
            "resourceType": "Patient",
            "id": WARM_UP_PATIENT,
            "meta": {"profile": ["http://example.org/profile"]},
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">synthetic</div>',
            },
            "extension": [
                {"url": "http://example.org/ext", "extension": [{"url": "text", "valueString": "x"}]}
            ],
            "identifier": [{"system": "urn:oid:1.2.3", "value": "0"}],
            "name": [{"family": "Synthetic", "given": ["Warm", "Up"]}],
            "telecom": [{"system": "phone", "value": "0"}],
            "address": [{"city": "Nowhere", "period": {"start": "2000-01-01"}}],
            "gender": "female",
            "birthDate": "1960-01-01",
        },
        {
            "resourceType": "Condition",
            "id": "warm-up-rcc",
            "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "verificationStatus": concept(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
            ),
            "extension": [
                {
                    "url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
                    "valueCodeableConcept": concept(
                        "http://terminology.hl7.org/CodeSystem/icd-o-3", "8310/3"
                    ),
                }
            ],
            "code": concept(snomed, "254915003"),
            "bodySite": [concept(snomed, "64033007")],
            "subject": subject,
            "onsetDateTime": today,
            "recordedDate": today,
        },
        {
            "resourceType": "Condition",
            "id": "warm-up-mets",
            "code": concept(snomed, "94391008"),
            "subject": subject,
            "onsetDateTime": today,
        },
        observation(
            "warm-up-cr",
            "2160-0",
            valueQuantity=quantity(1.0, "mg/dL"),
            referenceRange=[{"low": quantity(0.5, "mg/dL"), "high": quantity(1.1, "mg/dL")}],
        ),
        observation("warm-up-wt", "29463-7", valueQuantity=quantity(70, "kg")),
        observation("warm-up-ecog", "89247-1", valueInteger=1),
        observation("warm-up-status", "97509-4", valueCodeableConcept=concept(snomed, "359746009")),
        observation("warm-up-m", "21907-1", valueCodeableConcept=concept(snomed, "1229903009")),
        observation(
            "warm-up-size",
            "21889-1",
            component=[{"code": concept(loinc, "33728-7"), "valueQuantity": quantity(4.0, "cm")}],
        ),
        observation(
            "warm-up-bp",
            "85354-9",
            component=[
                {"code": concept(loinc, "8480-6"), "valueQuantity": quantity(120, "mm[Hg]")},
                {"code": concept(loinc, "8462-4"), "valueQuantity": quantity(80, "mm[Hg]")},
            ],
        ),
        {"resourceType": "Medication", "id": "warm-up-med", "code": concept(rxnorm, "1657746")},
        {
            "resourceType": "MedicationRequest",
            "id": "warm-up-mr",
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": "Medication/warm-up-med"},
            "subject": subject,
            "authoredOn": today,
            "dosageInstruction": [
                {
                    "text": "daily",
                    "timing": {
                        "repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {}}
                    },
                    "doseAndRate": [{"doseQuantity": quantity(5, "mg")}],
                }
            ],
        },
        {
            "resourceType": "MedicationStatement",
            "id": "warm-up-ms",
            "status": "active",
            "medicationCodeableConcept": concept(rxnorm, "1243012"),
            "subject": subject,
            "effectivePeriod": {"start": today},
        },
        {
            "resourceType": "Procedure",
            "id": "warm-up-proc",
            "status": "completed",
            "code": concept(snomed, "77477000"),
            "subject": subject,
            "performedPeriod": {"start": today, "end": today},
        },
    ]
