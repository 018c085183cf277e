"""cds-trials: a CDS Hooks 2.0 service that matches a patient's FHIR R4 chart to oncology trials.

Layers, each importing only those below it (tests/test_layering.py holds it): web -> hooks -> pipeline ->
engine (and the disease domains) -> facts -> fhir (records); the modules every layer may use (errors,
config, terminology, catalog, verdicts, logs) import none of these.
"""
