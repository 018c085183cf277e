"""Generators for the benchmark: a realistic mRCC chart of a requested size, and catalogs of N trials.

The chart is one patient with metastatic clear cell RCC on a first-line immunotherapy + TKI combination, seen
every two weeks: CMP and CBC panels, coagulation, vitals, ECOG, restaging CTs, comorbidities and their drugs,
plus resources no rule reads (Encounters, unrelated labs and vitals), as a real prefetch or fetch holds them.
Resources come in clinical priority order (the diagnosis, treatment and latest visit first, then history) and
are cut at exactly `n_resources`, so a small chart is a recent one and a large chart has a long lab history.

A catalog of N trials is the seed catalog (`mappings/`) plus generated variants of its trials: about 5% kidney
variants with changed thresholds, the rest retargeted to other cancers (lung, breast, colorectal...) through
their own anchor value sets, so that, as in a real multi-disease catalog, most trials cannot match him.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import copy
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from cds_service.config import DEFAULT_MAPPINGS_DIR

TODAY = date(2026, 11, 21)
PATIENT_ID = "bench-mrcc-1"
SERVICE_ID = "mrcc-trials"
FHIR_BASE = "https://fhir.example.org/r4"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
HISTOLOGY_EXTENSION = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"

Resource = dict[str, Any]


@dataclass(frozen=True)
class Measure:
    """A quantitative observation repeated at visits: LOINC code, UCUM unit, typical value and spread."""

    key: str
    loinc: str
    display: str
    unit: str
    mean: float
    spread: float
    low: float | None
    high: float | None
    category: str = "laboratory"
    decimals: int = 1


# Read by the catalog's rules (creatinine, liver panel, CBC, coagulation, calcium, weight)...
CMP_RELEVANT = (
    Measure(
        "cr",
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        1.05,
        0.08,
        0.7,
        1.3,
        decimals=2,
    ),
    Measure("hgb", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.6, 0.4, 13.5, 17.5),
    Measure(
        "plt",
        "777-3",
        "Platelets [#/volume] in Blood by Automated count",
        "10*3/uL",
        235,
        20,
        150,
        400,
        decimals=0,
    ),
    Measure(
        "anc", "751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*3/uL", 3.9, 0.5, 1.8, 7.7
    ),
    Measure(
        "bili", "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 0.1, 0.1, 1.2
    ),
    Measure(
        "alt",
        "1742-6",
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        28,
        5,
        7,
        56,
        decimals=0,
    ),
    Measure(
        "ast",
        "1920-8",
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        26,
        4,
        10,
        40,
        decimals=0,
    ),
    Measure(
        "alp",
        "6768-6",
        "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        95,
        9,
        44,
        147,
        decimals=0,
    ),
    Measure("alb", "1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 3.9, 0.2, 3.5, 5.0),
    Measure("ca", "17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 9.3, 0.3, 8.5, 10.2),
)
INR = Measure(
    "inr", "6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 1.05, 0.05, 0.8, 1.2
)
WEIGHT = Measure("wt", "29463-7", "Body weight", "kg", 81.0, 0.8, None, None, category="vital-signs")
HEIGHT = Measure(
    "ht", "8302-2", "Body height", "cm", 178.0, 0.0, None, None, category="vital-signs", decimals=0
)
# ... and measured at every visit but read by no rule.
UNRELATED = (
    Measure(
        "wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 6.4, 0.7, 4.0, 11.0
    ),
    Measure(
        "na", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 139, 2, 135, 145, decimals=0
    ),
    Measure("k", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.3, 3.5, 5.1),
    Measure(
        "glu", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 108, 12, 70, 99, decimals=0
    ),
    Measure(
        "bun", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 17, 3, 7, 20, decimals=0
    ),
    Measure("hr", "8867-4", "Heart rate", "/min", 74, 6, None, None, category="vital-signs", decimals=0),
    Measure("temp", "8310-5", "Body temperature", "Cel", 36.8, 0.2, None, None, category="vital-signs"),
)
VISIT_INTERVAL_DAYS = 14
LATEST_VISIT = TODAY - timedelta(days=4)


class ChartBuilder:
    """Builds the resources of the benchmark patient; every resource refers to the same Patient."""

    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.today = today
        self.subject = {"reference": f"Patient/{PATIENT_ID}"}

    # --- FHIR building blocks -------------------------------------------------------------------
    @staticmethod
    def _instant(day: date, hour: int = 9) -> str:
        return datetime.combine(day, time(hour, 30), tzinfo=UTC).isoformat().replace("+00:00", "Z")

    @staticmethod
    def _concept(system: str, code: str, display: str, *more: tuple[str, str, str]) -> dict[str, Any]:
        codings = [{"system": s, "code": c, "display": d} for s, c, d in ((system, code, display), *more)]
        return {"coding": codings, "text": display}

    def _identifier(self, rid: str) -> list[dict[str, str]]:
        return [
            {
                "system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.798268",
                "value": f"{rid}-{self.rng.randrange(10**8)}",
            }
        ]

    def _observation(
        self, rid: str, day: date, code: dict[str, Any], category: str, **value: Any
    ) -> Resource:
        profile = (
            "us-core-observation-lab" if category == "laboratory" else "us-core-observation-clinical-result"
        )
        return {
            "resourceType": "Observation",
            "id": rid,
            "meta": {"profile": [US_CORE + profile], "lastUpdated": self._instant(day, 14)},
            "identifier": self._identifier(rid),
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": code,
            "subject": self.subject,
            "effectiveDateTime": self._instant(day),
            "issued": self._instant(day, 13),
            "performer": [{"reference": "Organization/bench-lab", "display": "Hospital laboratory"}],
            **value,
        }

    def quantity(self, measure: Measure, day: date, suffix: str) -> Resource:
        value = round(self.rng.gauss(measure.mean, measure.spread), measure.decimals)
        quantity = {"value": value, "unit": measure.unit, "system": UCUM, "code": measure.unit}
        extra: dict[str, Any] = {"valueQuantity": quantity}
        if measure.low is not None and measure.high is not None:
            limit = {"unit": measure.unit, "system": UCUM, "code": measure.unit}
            extra["referenceRange"] = [
                {"low": {"value": measure.low, **limit}, "high": {"value": measure.high, **limit}}
            ]
            flag = "L" if value < measure.low else "H" if value > measure.high else "N"
            extra["interpretation"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": flag,
                        }
                    ]
                }
            ]
        code = self._concept(LOINC, measure.loinc, measure.display)
        return self._observation(f"{measure.key}-{suffix}", day, code, measure.category, **extra)

    def blood_pressure(self, day: date, suffix: str) -> Resource:
        def component(loinc: str, display: str, mean: float) -> dict[str, Any]:
            value = round(self.rng.gauss(mean, 6))
            return {
                "code": self._concept(LOINC, loinc, display),
                "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            }

        return self._observation(
            f"bp-{suffix}",
            day,
            self._concept(LOINC, "85354-9", "Blood pressure panel with all children optional"),
            "vital-signs",
            component=[
                component("8480-6", "Systolic blood pressure", 128),
                component("8462-4", "Diastolic blood pressure", 78),
            ],
        )

    def ecog(self, day: date, suffix: str, score: int = 1) -> Resource:
        return self._observation(
            f"ecog-{suffix}",
            day,
            self._concept(LOINC, "89247-1", "ECOG Performance Status score"),
            "survey",
            valueInteger=score,
            interpretation=[
                {
                    "coding": [
                        {
                            "system": LOINC,
                            "code": "LA9623-5",
                            "display": "Restricted in physically strenuous activity",
                        }
                    ]
                }
            ],
        )

    def encounter(self, day: date, suffix: str) -> Resource:
        return {
            "resourceType": "Encounter",
            "id": f"enc-{suffix}",
            "identifier": self._identifier(f"enc-{suffix}"),
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
                "display": "ambulatory",
            },
            "type": [self._concept(SNOMED, "185389009", "Follow-up visit")],
            "subject": self.subject,
            "participant": [{"individual": {"reference": "Practitioner/bench-onc-1"}}],
            "period": {"start": self._instant(day, 9), "end": self._instant(day, 10)},
            "serviceProvider": {"reference": "Organization/bench-hospital"},
        }

    def condition(
        self,
        rid: str,
        onset: date,
        code: dict[str, Any],
        *,
        histology: bool = False,
        category: str = "problem-list-item",
    ) -> Resource:
        resource: Resource = {
            "resourceType": "Condition",
            "id": rid,
            "meta": {"profile": [US_CORE + "us-core-condition-problems-health-concerns"]},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": category}]}],
            "code": code,
            "subject": self.subject,
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
        }
        if histology:
            resource["extension"] = [
                {
                    "url": HISTOLOGY_EXTENSION,
                    "valueCodeableConcept": self._concept(ICDO3, "8310/3", "Clear cell adenocarcinoma, NOS"),
                }
            ]
        return resource

    def medication_request(
        self, rid: str, start: date, medication: dict[str, Any], dosage: str, status: str = "active"
    ) -> Resource:
        return {
            "resourceType": "MedicationRequest",
            "id": rid,
            "status": status,
            "intent": "order",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                            "code": "outpatient",
                        }
                    ]
                }
            ],
            **medication,
            "subject": self.subject,
            "authoredOn": start.isoformat(),
            "requester": {"reference": "Practitioner/bench-onc-1"},
            "dosageInstruction": [{"text": dosage}],
        }

    def medication_statement(self, rid: str, start: date, ingredient: str, display: str) -> Resource:
        return {
            "resourceType": "MedicationStatement",
            "id": rid,
            "status": "active",
            "medicationCodeableConcept": self._concept(RXNORM, ingredient, display),
            "subject": self.subject,
            "effectivePeriod": {"start": start.isoformat()},
            "dateAsserted": start.isoformat(),
        }

    def procedure(self, rid: str, day: date, code: dict[str, Any]) -> Resource:
        return {
            "resourceType": "Procedure",
            "id": rid,
            "status": "completed",
            "code": code,
            "subject": self.subject,
            "performedDateTime": self._instant(day, 11),
        }

    # --- the chart --------------------------------------------------------------------------------
    def essentials(self) -> list[Resource]:
        """The diagnosis, the stage, the ongoing treatment and the latest restaging."""
        restaged = LATEST_VISIT - timedelta(days=28)
        return [
            {
                "resourceType": "Patient",
                "id": PATIENT_ID,
                "meta": {"profile": [US_CORE + "us-core-patient"]},
                "identifier": [
                    {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "value": "BENCH0001"}
                ],
                "active": True,
                "name": [{"family": "Benchmark", "given": ["Synthetic"]}],
                "gender": "male",
                "birthDate": "1961-04-12",
            },
            self.condition(
                "rcc",
                date(2025, 11, 18),
                self._concept(
                    SNOMED,
                    "254915003",
                    "Clear cell carcinoma of kidney",
                    (ICD10CM, "C64.1", "Malignant neoplasm of right kidney, except renal pelvis"),
                ),
                histology=True,
            ),
            self.condition(
                "mets-lung",
                date(2025, 11, 25),
                self._concept(
                    SNOMED,
                    "94391008",
                    "Secondary malignant neoplasm of lung",
                    (ICD10CM, "C78.01", "Secondary malignant neoplasm of right lung"),
                ),
            ),
            self.medication_request(
                "mr-pembro",
                date(2026, 1, 5),
                {"medicationReference": {"reference": "Medication/med-pembro"}},
                "200 mg IV every 3 weeks",
            ),
            {
                "resourceType": "Medication",
                "id": "med-pembro",
                "code": self._concept(RXNORM, "1657746", "Pembrolizumab 50 MG Injection"),
            },
            self.medication_request(
                "mr-axitinib",
                date(2026, 1, 5),
                {"medicationCodeableConcept": self._concept(RXNORM, "1243012", "Axitinib 5 MG Oral Tablet")},
                "5 mg by mouth twice daily",
            ),
            self._observation(
                "stage-m",
                date(2025, 11, 25),
                self._concept(LOINC, "21907-1", "Distant metastases.clinical [Class] Cancer"),
                "exam",
                valueCodeableConcept=self._concept(
                    SNOMED, "1229903009", "American Joint Committee on Cancer cM1"
                ),
            ),
            self.tumour_size(restaged, 5.4, "1"),
            self.disease_status(restaged, "359746009", "Patient's condition stable", "1"),
        ]

    def tumour_size(self, day: date, longest_cm: float, suffix: str) -> Resource:
        size = {
            "code": self._concept(LOINC, "33728-7", "Size.maximum dimension in Tumor"),
            "valueQuantity": {"value": longest_cm, "unit": "cm", "system": UCUM, "code": "cm"},
        }
        return self._observation(
            f"size-{suffix}",
            day,
            self._concept(LOINC, "21889-1", "Size Tumor"),
            "imaging",
            focus=[{"reference": "Condition/rcc"}],
            component=[size],
        )

    def disease_status(self, day: date, code: str, display: str, suffix: str) -> Resource:
        return self._observation(
            f"status-{suffix}",
            day,
            self._concept(LOINC, "97509-4", "Cancer disease progression"),
            "exam",
            focus=[{"reference": "Condition/rcc"}],
            valueCodeableConcept=self._concept(SNOMED, code, display),
        )

    def history(self) -> list[Resource]:
        """Comorbidities, supportive drugs, restaging CTs and earlier tumour assessments."""
        ct = self._concept(SNOMED, "77477000", "Computerized axial tomography")
        scans = [LATEST_VISIT - timedelta(days=28 + 91 * i) for i in range(4)]
        return [
            self.condition(
                "htn",
                date(2019, 6, 3),
                self._concept(
                    SNOMED,
                    "38341003",
                    "Hypertensive disorder",
                    (ICD10CM, "I10", "Essential (primary) hypertension"),
                ),
            ),
            self.medication_statement("ms-amlodipine", date(2019, 6, 3), "17767", "amlodipine"),
            self.condition(
                "t2d",
                date(2021, 2, 9),
                self._concept(
                    SNOMED,
                    "44054006",
                    "Diabetes mellitus type 2",
                    (ICD10CM, "E11.9", "Type 2 diabetes mellitus without complications"),
                ),
            ),
            self.medication_statement("ms-metformin", date(2021, 2, 9), "6809", "metformin"),
            self.condition(
                "hypothyroid",
                date(2026, 5, 12),
                self._concept(
                    SNOMED, "40930008", "Hypothyroidism", (ICD10CM, "E03.9", "Hypothyroidism, unspecified")
                ),
            ),
            self.medication_statement("ms-levothyroxine", date(2026, 5, 12), "10582", "levothyroxine"),
            self.medication_request(
                "mr-ondansetron",
                date(2026, 1, 5),
                {"medicationCodeableConcept": self._concept(RXNORM, "26225", "ondansetron")},
                "8 mg by mouth as needed for nausea",
            ),
            *(self.procedure(f"ct-{i}", day, ct) for i, day in enumerate(scans)),
            *(self.tumour_size(day, round(5.4 + 0.3 * i, 1), str(i + 1)) for i, day in enumerate(scans) if i),
            *(
                self.disease_status(day, "268910001", "Patient's condition improved", str(i + 1))
                for i, day in enumerate(scans)
                if i
            ),
        ]

    def visit(self, number: int) -> list[Resource]:
        """One follow-up visit, newest first by `number`; rule-relevant resources before the rest."""
        day = LATEST_VISIT - timedelta(days=VISIT_INTERVAL_DAYS * number)
        suffix = str(number)
        relevant: list[Resource] = [self.ecog(day, suffix)] if number % 2 == 0 else []
        relevant += [self.quantity(m, day, suffix) for m in CMP_RELEVANT]
        if number % 2 == 0:
            relevant.append(self.quantity(INR, day, suffix))
        relevant += [self.blood_pressure(day, suffix), self.quantity(WEIGHT, day, suffix)]
        if number % 6 == 0:
            relevant.append(self.quantity(HEIGHT, day, suffix))
        unrelated = [self.quantity(m, day, suffix) for m in UNRELATED]
        return [*relevant, *unrelated, self.encounter(day, suffix)]

    def resources(self) -> Iterator[Resource]:
        yield from self.essentials()
        yield from self.visit(0)
        yield from self.history()
        number = 1
        while True:
            yield from self.visit(number)
            number += 1


def chart(n_resources: int, *, seed: int = 7, today: date = TODAY) -> list[Resource]:
    """Return exactly `n_resources` resources of the benchmark patient, most relevant and recent first."""
    if n_resources < 1:
        raise ValueError("a chart holds at least the Patient")
    resources = ChartBuilder(random.Random(seed), today).resources()
    return [next(resources) for _ in range(n_resources)]


# Prefetch key of each resource type, as in mappings/services.yaml; Encounters and Medications arrive as
# `_include`d resources of the Observation and MedicationRequest searches.
PREFETCH_KEY = {
    "Condition": ("conditions", "match"),
    "Observation": ("observations", "match"),
    "Encounter": ("observations", "include"),
    "MedicationStatement": ("medicationStatements", "match"),
    "MedicationRequest": ("medicationRequests", "match"),
    "Medication": ("medicationRequests", "include"),
    "Procedure": ("procedures", "match"),
}
SEARCHSET_KEYS = (
    "conditions",
    "observations",
    "medicationStatements",
    "medicationRequests",
    "medicationAdministrations",
    "procedures",
)


def prefetch(resources: list[Resource]) -> dict[str, Any]:
    """Group resources into the service's prefetch keys: the Patient, and one searchset Bundle per search."""
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    entries: dict[str, list[dict[str, Any]]] = {key: [] for key in SEARCHSET_KEYS}
    for resource in resources:
        if resource["resourceType"] == "Patient":
            continue
        key, mode = PREFETCH_KEY[resource["resourceType"]]
        entries[key].append(
            {
                "fullUrl": f"{FHIR_BASE}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": mode},
            }
        )
    result: dict[str, Any] = {"patient": patients[0] if patients else None}
    for key, items in entries.items():
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": sum(1 for e in items if e["search"]["mode"] == "match"),
            "link": [{"relation": "self", "url": f"{FHIR_BASE}/{key}?patient={PATIENT_ID}"}],
        }
        if items:
            bundle["entry"] = items
        result[key] = bundle
    return result


def hook_request(n_resources: int, *, seed: int = 7, today: date = TODAY) -> dict[str, Any]:
    """Return a CDS Hooks patient-view request whose prefetch holds exactly `n_resources` resources."""
    rng = random.Random(seed)
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "context": {"userId": "Practitioner/bench-onc-1", "patientId": PATIENT_ID},
        "prefetch": prefetch(chart(n_resources, seed=seed, today=today)),
    }


def count_resources(request: dict[str, Any]) -> int:
    """Count the resources of a request's prefetch (the Patient and every Bundle entry)."""
    total = 0
    for value in request.get("prefetch", {}).values():
        if not value:
            continue
        if value.get("resourceType") == "Bundle":
            total += len(value.get("entry", []))
        else:
            total += 1
    return total


# --- catalogs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disease:
    """Another cancer, with the anchor value set that its generated trials require."""

    key: str
    title: str
    icd10_prefixes: tuple[str, ...]
    snomed: tuple[str, ...] = ()


OTHER_DISEASES = (
    Disease("lung", "Lung cancer", ("C34",), ("363358000", "254637007", "254632001")),
    Disease("breast", "Breast cancer", ("C50",), ("254837009",)),
    Disease("colorectal", "Colorectal cancer", ("C18", "C19", "C20"), ("363406005", "363351006")),
    Disease("prostate", "Prostate cancer", ("C61",), ("399068003",)),
    Disease("melanoma", "Melanoma of skin", ("C43",), ("372244006",)),
    Disease("bladder", "Bladder cancer", ("C67",), ("399326009",)),
    Disease("ovary", "Ovarian cancer", ("C56",), ("363443007",)),
    Disease("pancreas", "Pancreatic cancer", ("C25",), ("363418001",)),
    Disease("stomach", "Gastric cancer", ("C16",), ("363349007",)),
    Disease("liver", "Liver cancer", ("C22",)),
    Disease("glioma", "Malignant brain tumour", ("C71",), ("393563007",)),
    Disease("myeloma", "Multiple myeloma", ("C90",), ("109989006",)),
    Disease("thyroid", "Thyroid cancer", ("C73",), ("363478007",)),
    Disease("head-neck", "Head and neck cancer", ("C01", "C02", "C09", "C10", "C32")),
    Disease("uterus", "Endometrial cancer", ("C54",)),
)
BENCH_VALUESETS_FILE = "bench-other-cancers.yaml"
KIDNEY_LABEL = "kidney variant"
# Leaves that name a diagnosis: an anchor built from them decides which disease a trial is for.
DIAGNOSIS_LEAVES = ("condition", "histology")
BOUND_KEYS = (
    "min",
    "max",
    "lt",
    "le",
    "gt",
    "ge",
    "le_cm",
    "gt_cm",
    "systolic_gt",
    "diastolic_gt",
    "lt_uln",
    "le_uln",
    "gt_uln",
    "ge_uln",
    "lt_lln",
    "le_lln",
    "gt_lln",
    "ge_lln",
)
INTEGER_LIMITS = {"ecog": (0, 5), "karnofsky": (0, 100), "therapy_lines": (0, None)}


def _valueset_id(disease: Disease) -> str:
    return f"bench-{disease.key}-cancer"


def _other_valuesets(diseases: list[Disease]) -> dict[str, Any]:
    valuesets = []
    for disease in diseases:
        include: list[dict[str, Any]] = [{"system": ICD10CM, "prefixes": list(disease.icd10_prefixes)}]
        if disease.snomed:
            include.insert(0, {"system": SNOMED, "codes": list(disease.snomed)})
        valuesets.append(
            {
                "id": _valueset_id(disease),
                "title": f"{disease.title} (benchmark catalog only)",
                "source": "not in codes.md: well-known code; generated for the benchmark, never shipped",
                "include": include,
            }
        )
    return {"valuesets": valuesets}


def _map_leaves(rule: dict[str, Any], change: Callable[[str, Any], dict[str, Any] | None]) -> dict[str, Any]:
    """Return a copy of `rule` where `change(op, params)` may replace each leaf (None keeps it)."""
    ((op, value),) = rule.items()
    if op in ("all", "any"):
        return {op: [_map_leaves(r, change) for r in value]}
    if op == "not":
        return {op: _map_leaves(value, change)}
    return change(op, value) or copy.deepcopy(rule)


def _retarget(trial: dict[str, Any], disease: Disease) -> dict[str, Any]:
    """Make the trial's first anchor (its disease) require a diagnosis of another cancer."""
    target = {"condition": {"valueset": _valueset_id(disease), "current_only": True}}
    anchor = trial["anchors"][0]
    rule = _map_leaves(
        anchor["rule"], lambda op, _: copy.deepcopy(target) if op in DIAGNOSIS_LEAVES else None
    )
    anchor["rule"] = rule if rule != anchor["rule"] else target
    anchor["label"] = f"{disease.title.lower()} documented"
    return trial


def _shift_bound(op: str, key: str, value: Any, rng: random.Random) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if op in INTEGER_LIMITS or isinstance(value, int) and op not in ("lab", "creatinine_clearance"):
        step = 10 if op == "karnofsky" else 1
        low, high = INTEGER_LIMITS.get(op, (0, None))
        shifted = int(value) + rng.choice((-step, step))
        return max(low, shifted if high is None else min(high, shifted))
    return round(value * rng.choice((0.8, 0.9, 1.1, 1.25)), 3)


def _perturb(trial: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Change the numeric thresholds of a kidney trial (labs, scores, ages...), keeping its structure."""

    def change(op: str, params: Any) -> dict[str, Any] | None:
        if not isinstance(params, dict):
            return None
        return {
            op: {
                k: _shift_bound(op, k, v, rng) if k in BOUND_KEYS else copy.deepcopy(v)
                for k, v in params.items()
            }
        }

    for criterion in trial["criteria"]:
        if "rule" in criterion:
            criterion["rule"] = _map_leaves(criterion["rule"], change)
    return trial


def variant_id(number: int) -> str:
    """NCT number of a generated variant: NCT99..., a range no registered study has."""
    return f"NCT99{number:06d}"


def _variant(seed_trial: dict[str, Any], number: int, label: str) -> dict[str, Any]:
    trial = copy.deepcopy(seed_trial)
    # A recruiting trial's card links its registry page, and a trial with an NCT number is keyed by it.
    trial["id"] = trial["nct_id"] = variant_id(number)
    trial["url"] = f"https://clinicaltrials.gov/study/{trial['nct_id']}"
    trial["acronym"] = None
    trial["short_title"] = f"[{label}] {seed_trial['short_title']}"[:100]
    trial["title"] = f"{seed_trial['title']} (benchmark variant: {label})"
    return trial


def _write_yaml(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(
            data,
            handle,
            Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
            sort_keys=False,
            allow_unicode=True,
            width=1000,
        )


def generate_catalog(
    out_dir: Path,
    n_trials: int,
    *,
    source: Path = DEFAULT_MAPPINGS_DIR,
    kidney_share: float = 0.05,
    seed: int = 11,
) -> Path:
    """Write a catalog of `n_trials` trials to `out_dir`: the seed catalog plus generated variants."""
    rng = random.Random(seed)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(source, out_dir)
    trial_files = sorted((out_dir / "trials").glob("*.yaml"))
    seeds = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in trial_files]
    if not seeds:
        raise ValueError(f"no seed trials in {source / 'trials'}")
    if n_trials < len(seeds):
        raise ValueError(f"a catalog holds at least the {len(seeds)} seed trials")
    extra = n_trials - len(seeds)
    n_kidney = min(extra, round(n_trials * kidney_share))
    used: dict[str, Disease] = {}
    for number in range(1, extra + 1):
        template = seeds[(number - 1) % len(seeds)]
        if number <= n_kidney:
            trial = _perturb(_variant(template, number, f"{KIDNEY_LABEL} {number}"), rng)
        else:
            disease = OTHER_DISEASES[number % len(OTHER_DISEASES)]
            used[disease.key] = disease
            trial = _variant(template, number, f"{disease.key} {number}")
            trial = _retarget(trial, disease)
        _write_yaml(out_dir / "trials" / f"{trial['id']}.yaml", trial)
    if used:
        _write_yaml(out_dir / "valuesets" / BENCH_VALUESETS_FILE, _other_valuesets(list(used.values())))
    return out_dir
