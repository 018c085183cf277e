"""The rule engine: the rule language of mappings/README.md compiled once, then evaluated per patient.

`logic` (Kleene's three values plus `clinician`), `registry` (leaf operators, each declaring what it reads),
`rules` (the compiled all / any / not tree), `text` (how reasons show values), `derived` (values computed
from facts), `evaluate` (the `Engine`: every trial of a catalog for one patient). The operators themselves
live in `cds_service.operators` (generic) and `cds_service.domains` (one module per disease).
"""
