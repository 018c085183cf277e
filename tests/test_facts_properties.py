"""Property: build_facts never raises, whatever FHIR-shaped JSON it is given."""

from __future__ import annotations

from datetime import date

from conftest_facts import load_terminology, read_everything
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.catalog import load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.domains import kidney
from cds_service.engine import derived
from cds_service.engine.evaluate import Engine
from cds_service.facts import PatientFacts, build_facts

TERMINOLOGY = load_terminology()
TYPES = [
    "Patient",
    "Condition",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "Medication",
    "Procedure",
    "Bundle",
    "Encounter",
]
FIELDS = [
    "id",
    "status",
    "code",
    "subject",
    "patient",
    "valueQuantity",
    "valueInteger",
    "valueCodeableConcept",
    "valueString",
    "effectiveDateTime",
    "effectivePeriod",
    "issued",
    "component",
    "referenceRange",
    "interpretation",
    "focus",
    "bodySite",
    "clinicalStatus",
    "verificationStatus",
    "onsetDateTime",
    "onsetPeriod",
    "recordedDate",
    "extension",
    "medicationCodeableConcept",
    "medicationReference",
    "contained",
    "dosage",
    "dosageInstruction",
    "authoredOn",
    "intent",
    "performedDateTime",
    "performedPeriod",
    "birthDate",
    "gender",
    "entry",
    "resource",
    "coding",
    "system",
    "value",
    "unit",
    "low",
    "high",
    "start",
    "end",
    "reference",
]
CODES = [
    "2160-0",
    "89247-1",
    "89243-0",
    "97509-4",
    "21889-1",
    "33728-7",
    "85354-9",
    "8480-6",
    "21907-1",
    "2106-3",
    "19080-1",
    "718-7",
    "17861-6",
    "1751-7",
    "1657191",
    "C64.1",
    "702391001",
    "LA9625-0",
    "mg/dL",
    "[lb_av]",
]
UNITS = ["mg/dL", "umol/L", "g/L", "10*9/L", "[lb_av]", "kg", "cm", "mm", "mm[Hg]", "m[IU]/mL", "%", ""]
SYSTEMS = [
    "http://loinc.org",
    "http://snomed.info/sct",
    "urn:oid:2.16.840.1.113883.6.90",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://unitsofmeasure.org",
    "",
    None,
]
STRINGS = st.one_of(
    st.sampled_from(
        CODES
        + [
            "final",
            "active",
            "completed",
            "stopped",
            "2026-11-16",
            "2026-13",
            "Patient/p1",
            "#m1",
            "urn:uuid:x",
            "entered-in-error",
            "refuted",
            "resolved",
            "male",
            "female",
        ]
    ),
    st.text(max_size=8),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    STRINGS,
)
CODINGS = st.builds(
    lambda system, code: {"system": system, "code": code}, st.sampled_from(SYSTEMS), st.sampled_from(CODES)
)
CONCEPTS = st.fixed_dictionaries({"coding": st.lists(CODINGS, max_size=3)}, optional={"text": STRINGS})
QUANTITIES = st.fixed_dictionaries(
    {"value": st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), STRINGS)},
    optional={"unit": STRINGS, "code": STRINGS, "system": st.sampled_from(SYSTEMS), "comparator": STRINGS},
)
JSON = st.recursive(
    st.one_of(SCALARS, CONCEPTS, QUANTITIES),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(FIELDS), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def random_resources(draw):
    """Any fields with any nested values: mostly invalid, exercising the skip path."""
    resource = draw(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8))
    resource["resourceType"] = draw(st.sampled_from(TYPES))
    if draw(st.booleans()):
        resource["code"] = draw(CONCEPTS)  # make selection keep it, so that validation runs
    return resource


DATES = st.one_of(
    st.dates().map(date.isoformat),
    st.sampled_from(["2026", "2026-02", "2026-11-16T10:00:00+02:00", "2026-11-16T23:59:59Z"]),
)
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6), st.floats(-1e308, 1e308, allow_nan=False, allow_infinity=False)
)
VALID_QUANTITIES = st.fixed_dictionaries(
    {"value": NUMBERS},
    optional={"unit": st.sampled_from(UNITS), "code": st.sampled_from(UNITS), "comparator": st.just("<")},
)
STATUS = st.sampled_from(
    [
        "final",
        "preliminary",
        "amended",
        "entered-in-error",
        "active",
        "completed",
        "stopped",
        "on-hold",
        "not-taken",
        "cancelled",
        "intended",
        "unknown",
    ]
)
SUBJECT = st.fixed_dictionaries({"reference": st.sampled_from(["Patient/p1", "Patient/p2", "urn:uuid:x"])})
COMPONENTS = st.lists(
    st.fixed_dictionaries({"code": CONCEPTS}, optional={"valueQuantity": VALID_QUANTITIES}), max_size=3
)
RANGES = st.lists(
    st.fixed_dictionaries({}, optional={"low": VALID_QUANTITIES, "high": VALID_QUANTITIES}), max_size=2
)
HISTOLOGY = st.fixed_dictionaries(
    {
        "url": st.just(
            "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
        ),
        "valueCodeableConcept": CONCEPTS,
    }
)
PERIOD = st.fixed_dictionaries({}, optional={"start": DATES, "end": DATES})
CONTAINED = st.fixed_dictionaries(
    {"resourceType": st.just("Medication"), "id": st.just("m1")}, optional={"code": CONCEPTS}
)
PLAUSIBLE = {
    "Patient": st.fixed_dictionaries(
        {"id": st.sampled_from(["p1", "p2"])},
        optional={
            "birthDate": DATES.map(lambda d: d[:10]),
            "gender": st.sampled_from(["male", "female", "other"]),
        },
    ),
    "Observation": st.fixed_dictionaries(
        {"status": STATUS, "code": CONCEPTS},
        optional={
            "id": st.text(min_size=1, max_size=5),
            "subject": SUBJECT,
            "effectiveDateTime": DATES,
            "effectivePeriod": PERIOD,
            "issued": st.just("2026-11-16T10:00:00Z"),
            "valueQuantity": VALID_QUANTITIES,
            "valueInteger": st.integers(-(2**31), 2**31 - 1),
            "valueCodeableConcept": CONCEPTS,
            "valueString": STRINGS,
            "interpretation": st.lists(CONCEPTS, max_size=2),
            "component": COMPONENTS,
            "referenceRange": RANGES,
            "focus": st.lists(SUBJECT, max_size=2),
            "bodySite": CONCEPTS,
        },
    ),
    "Condition": st.fixed_dictionaries(
        {"subject": SUBJECT},
        optional={
            "code": CONCEPTS,
            "clinicalStatus": CONCEPTS,
            "verificationStatus": CONCEPTS,
            "onsetDateTime": DATES,
            "onsetPeriod": PERIOD,
            "recordedDate": DATES,
            "extension": st.lists(HISTOLOGY, max_size=2),
        },
    ),
    "MedicationStatement": st.fixed_dictionaries(
        {"status": STATUS, "subject": SUBJECT},
        optional={
            "medicationCodeableConcept": CONCEPTS,
            "effectivePeriod": PERIOD,
            "effectiveDateTime": DATES,
            "contained": st.lists(CONTAINED, max_size=1),
        },
    ),
    "MedicationRequest": st.fixed_dictionaries(
        {"status": STATUS, "intent": st.just("order"), "subject": SUBJECT},
        optional={
            "medicationCodeableConcept": CONCEPTS,
            "authoredOn": DATES,
            "dosageInstruction": st.lists(
                st.fixed_dictionaries(
                    {
                        "timing": st.fixed_dictionaries(
                            {"repeat": st.fixed_dictionaries({"boundsPeriod": PERIOD})}
                        )
                    }
                ),
                max_size=2,
            ),
        },
    ),
    "Procedure": st.fixed_dictionaries(
        {"status": STATUS, "subject": SUBJECT},
        optional={"code": CONCEPTS, "performedDateTime": DATES, "performedPeriod": PERIOD},
    ),
}


@st.composite
def plausible_resources(draw):
    """Resources close to valid R4, so that reading and fact building run on unusual values."""
    rtype = draw(st.sampled_from(sorted(PLAUSIBLE)))
    resource = {"resourceType": rtype, **draw(PLAUSIBLE[rtype])}
    if rtype in ("MedicationStatement", "MedicationRequest") and "medicationCodeableConcept" not in resource:
        resource["medicationReference"] = {"reference": draw(st.sampled_from(["#m1", "Medication/m1", "x"]))}
    return resource


# Read plans: every field and analyte, and the bundled catalog's as the Matcher passes it (of a repeated
# measurement only the newest usable value, albumin near the calcium): reading either way must not raise.
PLANS = {
    "everything": read_everything(TERMINOLOGY),
    "bundled catalog": Engine(load_catalog(DEFAULT_MAPPINGS_DIR)).read_plan,
}

INPUTS = st.lists(
    st.one_of(plausible_resources(), plausible_resources(), random_resources(), JSON), max_size=6
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS, st.sampled_from([None, "p1"]), st.sampled_from(sorted(PLANS)))
def test_build_facts_and_derived_values_never_raise(items, patient_id, plan):
    facts = build_facts(items, TERMINOLOGY, date(2026, 11, 21), patient_id, PLANS[plan])
    assert isinstance(facts, PatientFacts)
    assert all(score.value in range(6) for score in facts.ecog)
    assert all(
        value.unit == TERMINOLOGY.analytes[name].unit
        for name, values in facts.labs.items()
        for value in values
    )
    for compute in (
        derived.creatinine_clearance,
        derived.corrected_calcium,
        derived.weeks_on_current_regimen,
        kidney.synchronous,
    ):
        compute(facts)
    kidney.primary_in_place_flag(facts, TERMINOLOGY)
    kidney.primary_tumour(facts, TERMINOLOGY)
    kidney.imdc(facts, TERMINOLOGY)
