"""Facts about one patient: plain frozen dataclasses built from FHIR records (see `model`), what rules read.

`build_facts` reads what a `ReadPlan` says (derived from the operators' declared `Needs`) and nothing else.
"""

from cds_service.facts.build import build_facts
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
    "build_facts",
    "needs",
    "read_plan",
]
