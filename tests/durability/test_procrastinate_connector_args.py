"""Procrastinate's connector arguments and `defer --unknown` on real PostgreSQL, both runtimes.

A Procrastinate user's `PsycopgConnector(kwargs=..., configure=...)` must mean the same here:
options on every connection, `configure` awaited on every new one (pooled, LISTEN,
reconnected); pool arguments dawdle cannot honour are refused by name.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest
from psycopg import conninfo

from dawdle import App, ConfigurationError, PsycopgConnector
from dawdle._cli import main
from dawdle._connector._arguments import DEFAULT_CONNECT_TIMEOUT, REFUSED_POOL_ARGUMENTS
from dawdle._connector._params import JSONB_MAX_BYTES

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@pytest.fixture
def app_name() -> str:
    """An application_name no other test's connections use."""
    return f"dawdle-args-{uuid.uuid4().hex[:8]}"


def pids_named(dsn: str, name: str) -> list[int]:
    """The pids of the backends whose application_name is `name`."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    return [pid for (pid,) in rows]


def terminate(dsn: str, pids: list[int]) -> None:
    """pg_terminate_backend each of `pids`, waiting until each is gone."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


class Configured:
    """A `configure` that sets a GUC and records the pid of every connection it set up."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SET statement_timeout = '4321s'")
        self.pids.append(conn.info.backend_pid)


async def pid_and_timeout(connector: PsycopgConnector) -> tuple[int, str]:
    row = await connector.execute_query_one_async(
        "SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS timeout"
    )
    return row["pid"], row["timeout"]


async def fill_pool(connector: PsycopgConnector, size: int) -> None:
    """Make `size` pooled connections exist by holding them all at once."""
    async with anyio.create_task_group() as tg:
        for _ in range(size):
            tg.start_soon(connector.execute_query_async, "SELECT pg_sleep(0.05)")


async def listen(connector: PsycopgConnector, on_listening: Callable[[], Awaitable[None]]) -> None:
    """LISTEN through `connector` until cancelled; the notifications do not matter here."""

    async def ignore(channel: str, payload: str) -> None: ...

    await connector.listen_notify(ignore, ["procrastinate_any_queue_v1"], on_listening=on_listening)


@pytest.mark.anyio
async def test_kwargs_reach_every_pooled_and_listen_connection(
    schema_dsn: str, app_name: str
) -> None:
    """kwargs= (application_name, options' GUC) is on each pooled and the LISTEN connection."""
    connector = PsycopgConnector(
        conninfo=schema_dsn,
        kwargs={"application_name": app_name, "options": "-c statement_timeout=1234s"},
        max_size=2,
    )
    await connector.open_async()
    try:
        await fill_pool(connector, 2)
        assert (await pid_and_timeout(connector))[1] == "1234s"
        listening = anyio.Event()

        async def on_listening() -> None:
            listening.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen, connector, on_listening)
            await listening.wait()
            assert len(pids_named(schema_dsn, app_name)) == 3  # 2 pooled + LISTEN
            tg.cancel_scope.cancel()
    finally:
        await connector.close_async()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "off"),
        ({"kwargs": {"options": "-c jit=on"}}, "on"),
        ({"pooler": "transaction"}, "the server's"),
    ],
    ids=["default", "chosen-by-the-client", "transaction-pooler"],
)
@pytest.mark.anyio
async def test_jit_is_off_on_each_connection_unless_chosen_or_pooled(
    schema_dsn: str, options: dict[str, Any], expected: str
) -> None:
    """JIT compiles a deep queue's claim for tens of ms: off, unless chosen or behind a pooler."""
    with psycopg.connect(schema_dsn) as plain:
        servers = plain.execute("SELECT current_setting('jit')").fetchone()
    assert servers is not None
    connector = PsycopgConnector(conninfo=schema_dsn, max_size=2, **options)
    await connector.open_async()
    try:
        await fill_pool(connector, 2)
        settings = {
            (await connector.execute_query_one_async("SELECT current_setting('jit') AS jit"))["jit"]
            for _ in range(4)
        }
    finally:
        await connector.close_async()
    assert settings == {servers[0] if expected == "the server's" else expected}


@pytest.mark.anyio
async def test_the_jit_setting_is_never_prepared(schema_dsn: str) -> None:
    """Sent once per connection, never prepared: names prepared behind a pooler would clash."""
    connector = PsycopgConnector(conninfo=schema_dsn, kwargs={"prepare_threshold": 0}, max_size=1)
    await connector.open_async()
    try:
        rows = await connector.execute_query_all_async(
            "SELECT statement FROM pg_prepared_statements"
        )
    finally:
        await connector.close_async()
    assert [row for row in rows if "pg_settings" in row["statement"]] == []


@pytest.mark.anyio
async def test_configure_runs_on_every_new_connection_after_terminations(
    schema_dsn: str, app_name: str
) -> None:
    """Every new connection (pooled, LISTEN, replacement) is set up by configure before use."""
    configured = Configured()
    connector = PsycopgConnector(
        conninfo=schema_dsn,
        kwargs={"application_name": app_name},
        configure=configured,
        max_size=2,
    )
    await connector.open_async()
    try:
        await fill_pool(connector, 2)
        listens = 0
        listening = anyio.Event()

        async def on_listening() -> None:
            nonlocal listens, listening
            listens += 1
            listening.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen, connector, on_listening)
            await listening.wait()
            first = pids_named(schema_dsn, app_name)
            assert sorted(first) == sorted(configured.pids)  # 2 pooled + LISTEN
            listening = anyio.Event()
            await anyio.to_thread.run_sync(terminate, schema_dsn, first)
            await listening.wait()  # the LISTEN connection was replaced
            for _ in range(3):
                pid, timeout = await pid_and_timeout(connector)
                assert pid not in first
                assert pid in configured.pids
                assert timeout == "4321s"
            assert listens == 2
            replaced = set(pids_named(schema_dsn, app_name))
            assert replaced <= set(configured.pids) - set(first)
            tg.cancel_scope.cancel()
    finally:
        await connector.close_async()


@pytest.mark.anyio
async def test_configure_leaving_a_transaction_is_refused(schema_dsn: str) -> None:
    """A configure that leaves its connection in a transaction fails open_async, naming it."""

    async def begin(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("BEGIN")

    connector = PsycopgConnector(conninfo=schema_dsn, configure=begin)
    with pytest.raises(ConfigurationError, match=r"configure=<function .*begin.*INTRANS"):
        await connector.open_async()


@pytest.mark.anyio
async def test_django_style_kwargs_choose_the_database_without_conninfo(
    schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With kwargs naming dbname/host and no conninfo, that database is used, not DAWDLE_DSN."""
    monkeypatch.setenv("DAWDLE_DSN", "postgresql://nobody@127.0.0.1:1/nowhere")
    params = conninfo.conninfo_to_dict(schema_dsn)
    app = App(connector=PsycopgConnector(kwargs=params))
    async with app.open_async():
        row = await app.connector.execute_query_one_async("SELECT current_database() AS db")
    assert row["db"] == params["dbname"]


@pytest.mark.anyio
async def test_sync_connector_gets_kwargs(schema_dsn: str, app_name: str) -> None:
    """Sync code's connections (a sync task's defer) carry kwargs= as well."""
    connector = PsycopgConnector(conninfo=schema_dsn, kwargs={"application_name": app_name})
    await connector.open_async()
    try:
        row = await anyio.to_thread.run_sync(
            connector.execute_query_one, "SELECT current_setting('application_name') AS name"
        )
        assert row["name"] == app_name
    finally:
        await connector.close_async()


def test_sync_connector_refuses_an_async_configure(schema_dsn: str) -> None:
    """An async configure cannot set up sync connections: the sync connector says so."""
    connector = PsycopgConnector(conninfo=schema_dsn, configure=Configured())
    with pytest.raises(ConfigurationError, match=r"configure=.* is async .* kwargs="):
        connector.get_sync_connector()


@pytest.mark.parametrize("argument", sorted(REFUSED_POOL_ARGUMENTS))
def test_unsupported_pool_arguments_are_refused_by_name(argument: str) -> None:
    """Each psycopg pool argument dawdle cannot honour is refused naming it, not sent to libpq."""
    with pytest.raises(ConfigurationError) as caught:
        PsycopgConnector(conninfo="", **{argument: 1})
    assert f"{argument}=1 is a psycopg pool argument" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kwargs": {"autocommit": False}}, "autocommit=False: dawdle's connections are"),
        ({"kwargs": {"user": "a"}, "user": "b"}, "user given both as keywords and in kwargs="),
        ({"kwargs": "dbname=x"}, "kwargs='dbname=x' is not a dict"),
        ({"configure": "SET x"}, "configure='SET x' is not callable"),
    ],
)
def test_bad_kwargs_and_configure_are_named(options: dict[str, Any], message: str) -> None:
    """autocommit=False, a duplicated option, a non-dict kwargs, a non-callable configure."""
    with pytest.raises(ConfigurationError, match=message):
        PsycopgConnector(conninfo="", **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": -1}, "timeout must be a finite number >= 0, got -1"),
        ({"max_payload_bytes": 0}, "max_payload_bytes must be an int >= 1, got 0"),
        ({"max_payload_bytes": 1.5}, "max_payload_bytes must be an int >= 1, got 1.5"),
        (
            {"max_payload_bytes": JSONB_MAX_BYTES + 1},
            "max_payload_bytes=268,435,456 exceeds jsonb's limit of 268,435,455 bytes",
        ),
        ({"kwargs": {"connect_timeout": "soon"}}, "connect_timeout='soon' is not a whole number"),
    ],
)
def test_bad_timeouts_and_limits_are_named(options: dict[str, Any], message: str) -> None:
    """A negative pool timeout, a payload limit out of range, a connect_timeout not a number."""
    with pytest.raises(ConfigurationError, match=message):
        PsycopgConnector(conninfo="", **options)


SECRET = "S3cret"  # noqa: S105 (made up, to check that it never shows)


@pytest.mark.parametrize(
    ("dsn", "shown", "reason"),
    [
        (
            f"postgresql://postgres:{SECRET[:3]}%zz{SECRET[3:]}@127.0.0.1:5432/postgres",
            "'postgresql://postgres:***@127.0.0.1:5432/postgres'",
            "its password cannot be read",
        ),
        ("not a dsn at all", "'not a dsn at all'", 'missing "=" after "not"'),
        (f"host=127.0.0.1 password={SECRET} PW", "'host=127.0.0.1 password=***'", "password"),
        (f"password='{SECRET}' sslmode=maybe x", "'password=*** sslmode=maybe x'", '"x"'),
    ],
    ids=["uri-bad-percent", "not-a-dsn", "unquoted-space", "bad-after-password"],
)
def test_malformed_dsn_is_one_line_with_the_password_masked(
    dsn: str, shown: str, reason: str
) -> None:
    """A conninfo libpq cannot parse: ConfigurationError at construction, password masked."""
    with pytest.raises(ConfigurationError) as caught:
        PsycopgConnector(conninfo=dsn)
    message = str(caught.value)
    assert f"conninfo {shown} is not a valid connection string" in message
    assert reason in message
    assert SECRET not in message
    assert "PW" not in message.replace("password", "")
    assert caught.value.__cause__ is None  # psycopg's error quotes the password
    assert "\n" not in message


@BACKENDS
def test_malformed_dawdle_dsn_is_one_line_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """DAWDLE_DSN that does not parse: exit 2 (bad input), one line, no password, no traceback."""
    monkeypatch.setenv("DAWDLE_DSN", f"postgresql://postgres:{SECRET}%zz@127.0.0.1/postgres")
    assert main(["schema", "--check", "--backend", backend]) == 2
    assert capsys.readouterr().err == (
        "dawdle schema: error: PsycopgConnector: conninfo "
        "'postgresql://postgres:***@127.0.0.1/postgres' is not a valid connection string: its "
        "password cannot be read: in a URI, percent-encode it (% as %25, @ as %40, a space as "
        "%20); in key=value form, put it in single quotes\n"
    )


@pytest.mark.parametrize(
    ("given", "expected"),  # expected: connect_timeout as libpq reports it
    [
        ({}, str(DEFAULT_CONNECT_TIMEOUT)),
        ({"dsn": "connect_timeout=3"}, "3"),
        ({"kwargs": {"connect_timeout": 7}}, "7"),
        ({"environment": "9"}, "9"),  # PGCONNECT_TIMEOUT, which libpq reads itself
    ],
    ids=["default", "in-conninfo", "in-kwargs", "in-environment"],
)
@pytest.mark.anyio
async def test_default_connect_timeout_unless_one_is_set(
    schema_dsn: str, monkeypatch: pytest.MonkeyPatch, given: dict[str, Any], expected: str
) -> None:
    """Pooled and sync connections get connect_timeout=5 unless the DSN, kwargs or env set it."""
    if "environment" in given:
        monkeypatch.setenv("PGCONNECT_TIMEOUT", given["environment"])
    dsn_option, kwargs = given.get("dsn", ""), given.get("kwargs", {})
    connector = PsycopgConnector(conninfo=f"{schema_dsn} {dsn_option}", kwargs=kwargs)
    await connector.open_async()
    try:
        async with connector.connection() as conn:
            pooled = conn.info.get_parameters().get("connect_timeout")
        sync = connector.get_sync_connector()
        with sync.pool.connection() as sync_conn:  # type: ignore[attr-defined]
            synchronous = sync_conn.info.get_parameters().get("connect_timeout")
    finally:
        await connector.close_async()
    assert pooled == synchronous == expected


def test_pool_timeout_is_accepted_as_in_psycopg_pool() -> None:
    """timeout= (psycopg_pool's checkout wait) is honoured, not refused as a pool argument."""
    assert "timeout" not in REFUSED_POOL_ARGUMENTS
    PsycopgConnector(conninfo="", timeout=2.5)


def test_autocommit_true_and_name_are_accepted() -> None:
    """kwargs={"autocommit": True} (what dawdle does anyway) is fine; name= shows in the repr."""
    connector = PsycopgConnector(
        conninfo="host=db", kwargs={"autocommit": True}, name="jobs-pool", max_size=3
    )
    assert repr(connector) == "<PsycopgConnector 'jobs-pool' host=db max_size=3>"


@pytest.fixture
def jobs_db(schema_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's database as the CLI's default database, its job table emptied."""
    monkeypatch.setenv("DAWDLE_DSN", schema_dsn)
    for variable in ("DAWDLE_APP", "DAWDLE_DEFER_UNKNOWN", "PROCRASTINATE_DEFER_UNKNOWN"):
        monkeypatch.delenv(variable, raising=False)
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    return schema_dsn


def only_job(dsn: str) -> tuple[Any, ...]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT task_name, queue_name, lock, args, priority FROM procrastinate_jobs"
        ).fetchall()
    assert len(rows) == 1
    return rows[0]


@BACKENDS
def test_defer_unknown_without_app_lands_in_the_database(
    jobs_db: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """`dawdle defer --unknown` with no --app inserts the job by name with the given options."""
    argv = ["defer", "--unknown", "--backend", backend, "billing.invoice", "--json", '{"n": 3}']
    code = main([*argv, "--queue", "billing", "--lock", "acct-9", "--priority", "4"])
    assert code == 0
    assert capsys.readouterr().out.strip().isdigit()
    assert only_job(jobs_db) == ("billing.invoice", "billing", "acct-9", {"n": 3}, 4)


@BACKENDS
def test_procrastinate_defer_unknown_variable_lands_in_the_database(
    jobs_db: str, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """PROCRASTINATE_DEFER_UNKNOWN=true works as --unknown; the queue defaults to 'default'."""
    monkeypatch.setenv("PROCRASTINATE_DEFER_UNKNOWN", "true")
    assert main(["defer", "--backend", backend, "reports.nightly"]) == 0
    assert only_job(jobs_db) == ("reports.nightly", "default", None, {}, 0)
