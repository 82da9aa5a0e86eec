"""Alembic environment: runs on the connection the server hands over in ``attributes``."""

from alembic import context
from sqlalchemy import Connection

from checkpoint_server.storage.models import Base

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
