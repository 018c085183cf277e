"""Benchmark of the CDS service against a JSON-only baseline on the same stack (`make bench`)."""
