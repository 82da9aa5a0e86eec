"""The server's secret keys, drawn by a migration and shared by every server of a database."""

from sqlalchemy import Column, LargeBinary, String, select, table

from checkpoint_server.storage.database import Database

_KEYS = table("server_keys", Column("name", String), Column("key", LargeBinary))


async def token_key(database: Database) -> bytes:
    """The 32-byte key that seals page tokens and watch cursors."""
    async with database.read() as conn:
        key: bytes = (
            await conn.execute(select(_KEYS.c.key).where(_KEYS.c.name == "token"))
        ).scalar_one()
    return key
