"""PsycopgConnector behind a pooler: its options checked, prepared statements switched off.

No database: what the options mean is decided before any connection (the behaviour through
a real PgBouncer is in tests/topologies).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from dawdle import ConfigurationError, PsycopgConnector
from dawdle._connector._failures import reason
from dawdle._connector._pooler import Preparing, prepared_statement_lost

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.mark.parametrize("pooler", ["Transaction", "statement", 1])
def test_an_unknown_pooler_is_refused_by_value(pooler: Any) -> None:
    with pytest.raises(ConfigurationError, match=rf"pooler={pooler!r} is not a pooler mode"):
        PsycopgConnector(conninfo=DSN, pooler=pooler)


@pytest.mark.parametrize("threshold", [-1, "5", 2.5, True])
def test_a_bad_prepare_threshold_is_refused_by_value(threshold: Any) -> None:
    with pytest.raises(ConfigurationError, match=rf"prepare_threshold={threshold!r} is not"):
        PsycopgConnector(conninfo=DSN, prepare_threshold=threshold)
    with pytest.raises(ConfigurationError, match=rf"prepare_threshold={threshold!r} is not"):
        PsycopgConnector(conninfo=DSN, kwargs={"prepare_threshold": threshold})


def test_a_transaction_pooler_prepares_nothing_and_cannot_listen() -> None:
    connector = PsycopgConnector(conninfo=DSN, pooler="transaction")
    assert connector._connect.options["prepare_threshold"] is None
    assert not connector.can_listen
    listening = PsycopgConnector(conninfo=DSN, pooler="transaction", listen_conninfo=DSN)
    assert listening.can_listen


def test_an_explicit_prepare_threshold_is_kept_behind_a_transaction_pooler() -> None:
    """PgBouncer 1.21+ with max_prepared_statements keeps protocol-level prepared statements."""
    connector = PsycopgConnector(conninfo=DSN, pooler="transaction", prepare_threshold=5)
    assert connector._connect.options["prepare_threshold"] == 5


@pytest.mark.parametrize("pooler", [None, "session"])
def test_direct_and_session_connections_listen_and_prepare(pooler: Any) -> None:
    connector = PsycopgConnector(conninfo=DSN, pooler=pooler)
    assert "prepare_threshold" not in connector._connect.options  # psycopg's default: 5
    assert connector.can_listen


def test_a_malformed_listen_conninfo_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not a valid connection string"):
        PsycopgConnector(conninfo=DSN, listen_conninfo="host=a port")


@pytest.mark.anyio
async def test_listen_notify_refuses_a_transaction_pooler_without_a_direct_connection() -> None:
    connector = PsycopgConnector(conninfo=DSN, pooler="transaction")

    async def on_notification(*, channel: str, payload: str) -> None:
        raise AssertionError("nothing can be heard")

    with pytest.raises(ConfigurationError, match="pass listen_conninfo="):
        await connector.listen_notify(on_notification, ["procrastinate_any_queue_v1"])


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (psycopg.errors.DuplicatePreparedStatement('prepared statement "_pg3_0" exists'), True),
        (psycopg.errors.InvalidSqlStatementName('prepared statement "_pg3_1" missing'), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.ProtocolViolation("no diagnostics"), False),
    ],
)
def test_which_errors_are_a_lost_prepared_statement(error: psycopg.Error, lost: bool) -> None:
    assert prepared_statement_lost(error) is lost
    assert ("set prepare_threshold=None" in reason(error)) is lost


class FakeConnection:
    prepare_threshold: int | None = 5


def test_preparing_stops_once_for_every_connection(caplog: pytest.LogCaptureFixture) -> None:
    options: dict[str, Any] = {}
    preparing = Preparing(options)
    made_before = FakeConnection()
    preparing.follow(made_before)  # type: ignore[arg-type]
    assert made_before.prepare_threshold == 5
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            preparing.stop(psycopg.errors.DuplicatePreparedStatement("clash"))
    assert [r.action for r in caplog.records] == ["prepared_statements_off"]  # type: ignore[attr-defined]
    assert "set prepare_threshold=None" in caplog.records[0].getMessage()
    assert options["prepare_threshold"] is None  # new connections
    preparing.follow(made_before)  # type: ignore[arg-type]
    assert made_before.prepare_threshold is None
