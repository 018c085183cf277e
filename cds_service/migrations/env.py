"""Alembic's environment: runs the revisions on the connection `cds_service.storage.Storage.upgrade` passes,
inside the transaction it holds (with the schema lock), so nothing here commits."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with `cds-trials db upgrade` (or by opening a Storage)")
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
