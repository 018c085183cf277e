"""Build PatientFacts, a small Terminology and synthetic trials by hand, for tests of the evaluation core.

`Patient` is a fluent builder: every fact gets a generated reference ("Observation/3") unless one is
given, dates are given as "days before today", and `build()` returns frozen `PatientFacts` (with the
evidence of metastasis built from its other facts, as `build_facts` does). Nothing here reads the real
mapping files, so the tests stay independent of the catalog being edited.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cds_service.catalog import Anchor, Catalog, Cohort, Criterion, Trial
from cds_service.engine.registry import EvaluationContext
from cds_service.facts import (
    BloodPressureFact,
    ConditionFact,
    DiseaseStatusFact,
    LabValue,
    MedicationFact,
    PatientFacts,
    PregnancyTestFact,
    ProcedureFact,
    ScoreFact,
    StagingFact,
    TherapyLine,
    TumourSizeFact,
)
from cds_service.facts.conditions import metastasis_evidence
from cds_service.facts.medications import SYSTEMIC_ANTICANCER
from cds_service.facts.observations import KINDS
from cds_service.terminology import (
    ICD10CM,
    INGREDIENT,
    SNOMED,
    Analyte,
    Code,
    RangeLimits,
    Terminology,
    ValueSet,
)
from cds_service.verdicts import TrialInfo

TODAY = date(2026, 11, 21)


def ago(days: int | None) -> date | None:
    """The date `days` before TODAY (None stays None: an undated record)."""
    return None if days is None else TODAY - timedelta(days=days)


def _valueset(vs_id: str, title: str, *codes: Code, prefixes: Iterable[Code] = ()) -> ValueSet:
    return ValueSet(vs_id, title, frozenset(codes), frozenset(prefixes))


def _ingredients(vs_id: str, title: str, *ids: str) -> ValueSet:
    return _valueset(vs_id, title, *((INGREDIENT, i) for i in ids))


def _analyte(
    analyte_id: str,
    title: str,
    unit: str,
    factors: Mapping[str, float],
    low: float | None = None,
    high: float | None = None,
    by_sex: Mapping[str, RangeLimits] | None = None,
) -> Analyte:
    default = RangeLimits(low, high) if low is not None or high is not None else None
    return Analyte(analyte_id, title, frozenset(), unit, dict(factors), default, dict(by_sex or {}))


def terminology() -> Terminology:
    """A small vocabulary with the value sets and analytes the rule tests name."""
    valuesets = [
        _valueset("kidney-cancer", "Kidney cancer", (SNOMED, "702391001")),
        _valueset("rcc-clear-cell", "Clear cell renal cell carcinoma", (SNOMED, "254915003")),
        _valueset("rcc-non-clear-cell", "Non-clear-cell renal cell carcinoma", (SNOMED, "733608000")),
        _valueset("metastatic-disease", "Metastatic disease", (SNOMED, "94391008")),
        _valueset("liver-metastasis", "Liver metastasis", (SNOMED, "94381002")),
        _valueset("brain-metastasis", "Brain metastasis", (SNOMED, "94225005")),
        _valueset("hiv-hepatitis", "HIV or chronic hepatitis B/C", (SNOMED, "86406008")),
        _valueset("heart-failure", "Heart failure", (SNOMED, "84114007")),
        _valueset("pregnancy", "Pregnancy", (SNOMED, "77386006")),
        _valueset("other-malignancy", "Other primary cancers", (SNOMED, "399068003")),
        _valueset("skin-exceptions", "Non-melanoma skin cancer", prefixes=[(ICD10CM, "C44")]),
        _valueset("nephrectomy", "Nephrectomy", (SNOMED, "116033007")),
        _valueset("major-surgery", "Major surgery", (SNOMED, "387713003")),
        _ingredients("anticoagulant", "Anticoagulant", "warfarin", "apixaban"),
        _ingredients(
            "immune-checkpoint-inhibitor",
            "Immune checkpoint inhibitor",
            "nivolumab",
            "ipilimumab",
            "pembrolizumab",
        ),
        _ingredients("vegf-tki", "VEGF tyrosine kinase inhibitor", "axitinib", "cabozantinib", "sunitinib"),
        _valueset("tumour-site-kidney", "Kidney structure (body site)", (SNOMED, "64033007")),
        # Read by name by the facts stage (an Engine checks that they exist). The facts here are built by
        # hand, so these hold no codes; the anticancer drugs are those the tests name.
        _ingredients(
            SYSTEMIC_ANTICANCER,
            "Systemic anticancer therapy",
            *("nivolumab", "ipilimumab", "pembrolizumab", "axitinib", "cabozantinib", "sunitinib"),
        ),
        *(_valueset(vs_id, vs_id) for kind in KINDS for vs_id in sorted(kind.valuesets)),
    ]
    analytes = [
        _analyte(
            "creatinine",
            "Creatinine in serum or plasma (blood)",
            "mg/dL",
            {"mg/dL": 1, "umol/L": 0.0113096584},
            0.6,
            1.2,
            {"female": RangeLimits(0.5, 1.1)},
        ),
        _analyte("alt", "Alanine aminotransferase (ALT)", "U/L", {"U/L": 1}, 7, 56),
        _analyte("bilirubin", "Total bilirubin", "mg/dL", {"mg/dL": 1}, 0.1, 1.2),
        _analyte("inr", "International normalized ratio (INR)", "{INR}", {"{INR}": 1}, 0.8, 1.1),
        _analyte(
            "hemoglobin",
            "Hemoglobin in blood",
            "g/dL",
            {"g/dL": 1},
            by_sex={"male": RangeLimits(13.5, 17.5), "female": RangeLimits(12.0, 15.5)},
        ),
        _analyte("neutrophils", "Absolute neutrophil count", "10*3/uL", {"10*3/uL": 1}, 1.5, 8.0),
        _analyte("platelets", "Platelet count", "10*3/uL", {"10*3/uL": 1}, 150, 400),
        _analyte("calcium", "Calcium (total) in serum or plasma", "mg/dL", {"mg/dL": 1}, 8.5, 10.2),
        _analyte("albumin", "Albumin in serum or plasma", "g/dL", {"g/dL": 1}, 3.4, 5.4),
        _analyte("weight", "Body weight", "kg", {"kg": 1}),
    ]
    return Terminology.build(valuesets, analytes, [])


def context(**windows: int) -> EvaluationContext:
    """A fresh evaluation context over the test vocabulary (recency windows may be overridden)."""
    return EvaluationContext(terminology=terminology(), **windows)


class Patient:
    """Fluent builder of PatientFacts; each method adds one fact and returns the builder."""

    def __init__(self, today: date = TODAY, patient_id: str = "p1") -> None:
        self._today = today
        self._fields: dict[str, Any] = {"patient_ref": f"Patient/{patient_id}"}
        self._lists: dict[str, list[Any]] = {}
        self._labs: dict[str, list[LabValue]] = {}
        self._unconverted: dict[str, list[LabValue]] = {}
        self._counter = itertools.count(1)

    def _ago(self, days: int | None) -> date | None:
        return None if days is None else self._today - timedelta(days=days)

    def _ref(self, kind: str, ref: str | None) -> str:
        return ref or f"{kind}/{next(self._counter)}"

    def _add(self, name: str, fact: Any) -> Patient:
        self._lists.setdefault(name, []).append(fact)
        return self

    def born(self, birth_date: date) -> Patient:
        self._fields["birth_date"] = birth_date
        return self

    def aged(self, years: int) -> Patient:
        """Born `years` years before today (birthday today)."""
        return self.born(self._today.replace(year=self._today.year - years))

    def sex(self, sex: str) -> Patient:
        self._fields["sex"] = sex
        return self

    def unavailable(self, *resource_types: str) -> Patient:
        self._fields["unavailable"] = frozenset(resource_types)
        return self

    def condition(
        self,
        *valuesets: str,
        onset: int | None = 400,
        current: bool = True,
        confirmed: bool = True,
        display: str | None = None,
        codes: Iterable[Code] = (),
        ref: str | None = None,
    ) -> Patient:
        """A condition in `valuesets`, onset `onset` days ago (None: undated)."""
        return self._add(
            "conditions",
            ConditionFact(
                ref=self._ref("Condition", ref),
                codes=frozenset(codes),
                valuesets=frozenset(valuesets),
                display=display,
                onset=self._ago(onset),
                current=current,
                confirmed=confirmed,
            ),
        )

    def lab(
        self,
        analyte: str,
        value: float,
        unit: str,
        days: int | None = 5,
        low: float | None = None,
        high: float | None = None,
        as_sent: str = "",
        ref: str | None = None,
    ) -> Patient:
        """A lab value already in `unit` (the analyte's canonical unit unless testing an unconverted one)."""
        self._labs.setdefault(analyte, []).append(
            LabValue(
                analyte=analyte,
                value=value,
                unit=unit,
                date=self._ago(days),
                ref=self._ref("Observation", ref),
                low=low,
                high=high,
                as_sent=as_sent,
            )
        )
        return self

    def unconverted_lab(
        self, analyte: str, value: float, unit: str, days: int | None = 5, ref: str | None = None
    ) -> Patient:
        """A lab value in a unit the analyte does not convert (kept by facts only to explain an unknown)."""
        self._unconverted.setdefault(analyte, []).append(
            LabValue(
                analyte=analyte,
                value=value,
                unit=unit,
                date=self._ago(days),
                ref=self._ref("Observation", ref),
                as_sent=f"{value:g} {unit}",
            )
        )
        return self

    def ecog(self, value: int, days: int | None = 10, ref: str | None = None) -> Patient:
        return self._add("ecog", ScoreFact("ecog", value, self._ago(days), self._ref("Observation", ref)))

    def karnofsky(self, value: int, days: int | None = 10, ref: str | None = None) -> Patient:
        return self._add(
            "karnofsky", ScoreFact("karnofsky", value, self._ago(days), self._ref("Observation", ref))
        )

    def disease_status(self, status: str, days: int | None = 20, ref: str | None = None) -> Patient:
        return self._add(
            "disease_status",
            DiseaseStatusFact(status, (SNOMED, status), self._ago(days), self._ref("Observation", ref)),
        )

    def staging(self, metastatic: bool, days: int | None = 300, ref: str | None = None) -> Patient:
        code = (SNOMED, "1229903009" if metastatic else "1229901006")
        return self._add(
            "staging", StagingFact(metastatic, code, self._ago(days), self._ref("Observation", ref))
        )

    def tumour_size(
        self, longest_cm: float, days: int | None = 30, focus: tuple[str, ...] = (), ref: str | None = None
    ) -> Patient:
        size = TumourSizeFact(longest_cm, self._ago(days), self._ref("Observation", ref), focus)
        return self._add("tumour_sizes", size)

    def blood_pressure(
        self, systolic: float | None, diastolic: float | None, days: int | None = 3, ref: str | None = None
    ) -> Patient:
        return self._add(
            "blood_pressure",
            BloodPressureFact(systolic, diastolic, self._ago(days), self._ref("Observation", ref)),
        )

    def pregnancy_test(self, positive: bool, days: int | None = 5, ref: str | None = None) -> Patient:
        return self._add(
            "pregnancy_tests", PregnancyTestFact(positive, self._ago(days), self._ref("Observation", ref))
        )

    def medication(
        self,
        *valuesets: str,
        ingredients: Iterable[str] = (),
        start: int | None = 100,
        end: int | None = None,
        active: bool = True,
        display: str | None = None,
        ref: str | None = None,
    ) -> Patient:
        """A medication started `start` days ago (ended `end` days ago, if given)."""
        return self._add(
            "medications",
            MedicationFact(
                ref=self._ref("MedicationStatement", ref),
                ingredients=frozenset(ingredients),
                valuesets=frozenset(valuesets),
                display=display,
                start=self._ago(start),
                end=self._ago(end),
                active=active,
            ),
        )

    def line(
        self,
        *ingredients: str,
        start: int = 200,
        end: int | None = None,
        metastatic: bool | None = True,
        ref: str | None = None,
    ) -> Patient:
        """A therapy line started `start` days ago; ongoing unless `end` is given (numbered in build())."""
        return self._add(
            "therapy_lines",
            (
                frozenset(ingredients),
                self._today - timedelta(days=start),
                self._ago(end),
                self._ref("MedicationStatement", ref),
                metastatic,
            ),
        )

    def procedure(
        self, *valuesets: str, days: int | None = 300, display: str | None = None, ref: str | None = None
    ) -> Patient:
        return self._add(
            "procedures",
            ProcedureFact(
                ref=self._ref("Procedure", ref),
                codes=frozenset(),
                valuesets=frozenset(valuesets),
                display=display,
                date=self._ago(days),
            ),
        )

    def build(self) -> PatientFacts:
        lists = {name: tuple(facts) for name, facts in self._lists.items()}
        if "therapy_lines" in lists:  # oldest first, as facts.therapy_lines builds them
            lists["therapy_lines"] = tuple(
                TherapyLine(number, ingredients, start, end, end is None, (ref,), metastatic)
                for number, (ingredients, start, end, ref, metastatic) in enumerate(
                    sorted(lists["therapy_lines"], key=lambda line: line[1]), start=1
                )
            )
        labs = {name: tuple(sorted(values, key=_newest_first)) for name, values in self._labs.items()}
        unconverted = {
            name: tuple(sorted(values, key=_newest_first)) for name, values in self._unconverted.items()
        }
        metastasis = metastasis_evidence(
            lists.get("conditions", ()),
            lists.get("staging", ()),
            lists.get("disease_status", ()),
            terminology(),
        )
        return PatientFacts(
            today=self._today,
            labs=labs,
            unconverted_labs=unconverted,
            metastasis=metastasis,
            **self._fields,
            **lists,
        )


def _newest_first(value: LabValue) -> tuple[bool, int]:
    return (value.date is None, -(value.date.toordinal() if value.date else 0))


# --- synthetic catalogs -------------------------------------------------------------------------------------

KIDNEY_CANCER_ANCHOR = Anchor("kidney cancer documented", {"condition": {"valueset": "kidney-cancer"}})
METASTATIC_ANCHOR = Anchor("metastatic disease documented", {"metastatic": {}})


def criterion(
    criterion_id: str,
    rule: Mapping[str, Any] | None = None,
    *,
    type: str = "inclusion",
    clinician: str | None = None,
    text: str | None = None,
) -> Criterion:
    return Criterion(
        id=criterion_id,
        type=type,
        text=text or f"registry text of {criterion_id}",
        heading=None,
        rule=rule,
        clinician=clinician,
    )


def trial(
    key: str,
    criteria: Iterable[Criterion],
    anchors: Iterable[Anchor] = (KIDNEY_CANCER_ANCHOR,),
    status: str = "RECRUITING",
    cohorts: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> Trial:
    info = TrialInfo(
        key=key,
        nct_id=key if key.startswith("NCT") else None,
        acronym=None,
        short_title=f"Trial {key}",
        title=f"Trial {key}",
        status=status,
        phase="PHASE2",
        sponsor=None,
        url=None,
    )
    return Trial(
        info=info,
        anchors=tuple(anchors),
        criteria=tuple(criteria),
        cohorts=tuple(Cohort(label, rule) for label, rule in cohorts),
        sites=(),
        source=None,
    )


def catalog(*trials: Trial, version: str = "test-version") -> Catalog:
    return Catalog(
        trials=tuple(trials),
        terminology=terminology(),
        services=(),
        version=version,
        directory=Path("."),
    )
