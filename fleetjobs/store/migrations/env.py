"""Alembic environment: migrations always run on a connection handed in by fleetjobs."""

from __future__ import annotations

from alembic import context

from fleetjobs.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("fleetjobs runs migrations itself at start-up (fleetjobs serve / fleetjobs db upgrade)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
