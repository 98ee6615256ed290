"""The private PostgreSQL fixture works the way the storage tests rely on."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.servers.postgres import PostgresServer


def test_data_survives_a_restart_and_clients_reconnect(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    engine = sa.create_engine(pg_url, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE ticket (ref text PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO ticket VALUES ('T-1')"))
        held = engine.connect()
        started = held.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar()

        postgres_server.restart()

        try:
            held.execute(sa.text("SELECT 1"))
            raise AssertionError("a connection survived the restart")
        except sa.exc.OperationalError:
            held.invalidate()
        finally:
            held.close()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar() != started
            assert conn.execute(sa.text("SELECT ref FROM ticket")).scalars().all() == ["T-1"]
            assert conn.execute(sa.text("SELECT inet_server_addr()::text")).scalar() == "127.0.0.1/32"
    finally:
        engine.dispose()


def test_each_test_gets_a_fresh_database(pg_url: str) -> None:
    """Runs after the test above created `ticket`; a shared database would still have it."""
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == make_url(
                pg_url
            ).database
    finally:
        engine.dispose()


def test_stopped_server_refuses_then_comes_back(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    engine = sa.create_engine(pg_url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
    try:
        postgres_server.stop()
        try:
            with engine.connect():
                raise AssertionError("connected to a stopped server")
        except sa.exc.OperationalError:
            pass
        postgres_server.start()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
