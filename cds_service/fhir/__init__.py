"""FHIR at the edge: raw FHIR R4 JSON in, plain records out (the records layer).

Nothing above this package reads FHIR JSON or imports a FHIR library: `fhir.resources` is imported only by
`validate`.
"""
