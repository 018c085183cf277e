"""Schema migrations (Alembic): one revision a schema change, in versions/.

`Storage` applies them when it opens a database (every worker at start, serialised by a lock) and so does
`cds-trials db upgrade`. A new revision: `alembic revision -m "what changes" --rev-id 000N` from the
repository root (pyproject.toml's [tool.alembic] points here), then write its upgrade and downgrade by hand
and change the tables of `cds_service.storage` to match (a test compares the two on SQLite and PostgreSQL).
"""
