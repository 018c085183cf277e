"""Facts about one patient: plain frozen dataclasses built from FHIR records (see `model`), what rules read.

`facts.build.build_facts` reads what a `ReadPlan` says (derived from the operators' declared `Needs`) and
nothing else. This package's own names are plain data: importing them loads no FHIR library (the engine
imports them; only `build` reads FHIR).
"""

from cds_service.facts.model import (
    BloodPressureFact,
    ConditionFact,
    DiseaseStatusFact,
    LabValue,
    MedicationFact,
    MetastasisEvidence,
    PatientFacts,
    PregnancyTestFact,
    ProcedureFact,
    ScoreFact,
    StagingFact,
    TherapyLine,
    TumourSizeFact,
)
from cds_service.facts.plan import Needs, ReadPlan, needs, read_plan

__all__ = [
    "BloodPressureFact",
    "ConditionFact",
    "DiseaseStatusFact",
    "LabValue",
    "MedicationFact",
    "MetastasisEvidence",
    "Needs",
    "PatientFacts",
    "PregnancyTestFact",
    "ProcedureFact",
    "ReadPlan",
    "ScoreFact",
    "StagingFact",
    "TherapyLine",
    "TumourSizeFact",
    "needs",
    "read_plan",
]
