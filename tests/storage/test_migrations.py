"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL.

Several changes add migrations; a model column or index without its migration
would work in tests that create tables from the models and fail on an upgraded
production database. Alembic's own comparison finds the difference.
"""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from maild.storage.db import make_engine, upgrade
from maild.storage.models import Base


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        return list(compare_metadata(context, Base.metadata))


def test_sqlite_migrations_match_the_models(tmp_path: pytest.TempPathFactory) -> None:
    assert _differences(f"sqlite:///{tmp_path}/m.db") == []


def test_postgres_migrations_match_the_models(pg_url: str) -> None:
    assert _differences(pg_url) == []


def test_the_partial_index_keeps_its_condition_on_both_databases(tmp_path: pytest.TempPathFactory,
                                                                 pg_url: str) -> None:
    """Alembic does not compare an index's condition, so this does: the awaiting-reaction index is
    partial in the migrated database and in the schema compiled for it; on PostgreSQL the condition
    reaches the schema only through ``tables.for_postgresql`` when the engine is made."""
    from sqlalchemy import text
    from sqlalchemy.schema import CreateIndex

    from maild.storage.tables import tickets

    index = next(i for i in tickets.indexes if i.name == "ix_tickets_awaiting_reaction")
    for url, catalog in ((f"sqlite:///{tmp_path}/m.db",
                          "SELECT sql FROM sqlite_master WHERE name = 'ix_tickets_awaiting_reaction'"),
                         (pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_tickets_awaiting_reaction'")):
        engine = make_engine(url)
        upgrade(engine)
        assert "WHERE status IN" in str(CreateIndex(index).compile(dialect=engine.dialect)), url
        with engine.connect() as conn:
            assert "first_response_at IS NULL" in conn.execute(text(catalog)).scalar_one(), url
        engine.dispose()
