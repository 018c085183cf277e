"""Conditions and procedures -> facts, and the evidence of distant metastasis.

Entered-in-error and refuted conditions are dropped; resolved, inactive and remission ones are history (not
current); provisional, differential and unconfirmed ones are not confirmed. Only completed procedures count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cds_service.facts.model import (
    ConditionFact,
    DiseaseStatusFact,
    MetastasisEvidence,
    ProcedureFact,
    StagingFact,
)
from cds_service.facts.observations import STAGING_M1
from cds_service.fhir.records import ConditionRecord, ProcedureRecord
from cds_service.terminology import ICD10CM, Terminology

IGNORED_VERIFICATION = frozenset({"entered-in-error", "refuted"})
UNCONFIRMED_VERIFICATION = frozenset({"provisional", "differential", "unconfirmed"})
NOT_CURRENT_CLINICAL = frozenset({"resolved", "inactive", "remission"})
METASTATIC_DISEASE = "metastatic-disease"
_SECONDARY_ICD10_CATEGORIES = ("C77", "C78", "C79", "C7B")  # secondary (metastatic) neoplasms


def condition_fact(rec: ConditionRecord, terminology: Terminology) -> ConditionFact | None:
    if rec.verification_status in IGNORED_VERIFICATION:
        return None
    return ConditionFact(
        ref=rec.ref,
        codes=rec.code.codes,
        valuesets=terminology.memberships(rec.code.codes | rec.histology),
        display=rec.code.text,
        onset=rec.onset or rec.recorded,
        current=rec.clinical_status not in NOT_CURRENT_CLINICAL,
        confirmed=rec.verification_status not in UNCONFIRMED_VERIFICATION,
        histology=rec.histology,
        body_sites=rec.body_sites,
        stage=rec.stage,
    )


def procedure_fact(rec: ProcedureRecord, terminology: Terminology) -> ProcedureFact | None:
    if rec.status != "completed":
        return None
    return ProcedureFact(
        ref=rec.ref,
        codes=rec.code.codes,
        valuesets=terminology.memberships(rec.code.codes),
        display=rec.code.text,
        date=rec.performed,
        body_sites=rec.body_sites,
    )


def is_malignancy_code(system: str, code: str) -> bool:
    """ICD-10-CM C00-D09 (malignant and in situ neoplasms), leaving out secondary neoplasms: read as a cancer
    without a value set."""
    if system != ICD10CM or code.startswith(_SECONDARY_ICD10_CATEGORIES):
        return False
    return code[:1] == "C" or ("D00" <= code[:3] <= "D09")


def metastasis_evidence(
    conditions: Sequence[ConditionFact],
    staging: Iterable[StagingFact],
    statuses: Iterable[DiseaseStatusFact],
    terminology: Terminology,
) -> MetastasisEvidence:
    """What documents distant metastasis, from facts already ordered newest first: metastatic-disease
    conditions, an M1 category (an Observation, or a confirmed condition's stage summary, never a stage group
    alone: kidney stage IV includes T4 any N M0), a "metastatic" disease status."""
    sites = [c for c in conditions if METASTATIC_DISEASE in c.valuesets]
    m1 = terminology.valuesets.get(STAGING_M1)
    staged = [
        StagingFact(True, code, c.onset, c.ref, c.display or "the cancer")
        for c in conditions
        if c.confirmed and m1 is not None
        for code in sorted(c.stage)[:1]
        if m1.contains(code)
    ]
    return MetastasisEvidence(
        conditions=tuple(c for c in sites if c.confirmed),
        unconfirmed=tuple(c for c in sites if not c.confirmed),
        staging=tuple([*(s for s in staging if s.metastatic), *staged]),
        statuses=tuple(d for d in statuses if d.status == "metastatic"),
    )
