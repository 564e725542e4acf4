"""The `dawdle` command line: parsing, loading --app, error paths, and health reports.

Commands that run go through `anyio.run`, so each of those tests runs on both backends
(the `--backend` option) against an app on the in-memory connector; the healthcheck's and
schema's reports need real PostgreSQL (`health_dsn`: the module's database, emptied).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import psycopg
import pytest
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import schema

from dawdle import App, DatabaseUnavailable, InMemoryConnector
from dawdle._cli import build_parser, load_app, main
from dawdle._cli_commands import describe_age
from dawdle._dawdle_schema import DAWDLE_SCHEMA

MODULE = "dawdle_cli_test_app"
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


class UnreachableConnector(InMemoryConnector):
    """Fails to open, as PsycopgConnector does when the server is down."""

    async def open_async(self, pool: procrastinate_connector.Pool | None = None) -> None:
        raise DatabaseUnavailable("cannot connect to PostgreSQL at host=db dbname=jobs")


class GroupedFailureConnector(InMemoryConnector):
    """Fails to open with the error wrapped in an exception group, as task groups do."""

    async def open_async(self, pool: procrastinate_connector.Pool | None = None) -> None:
        raise ExceptionGroup("loops", [DatabaseUnavailable("server closed the connection")])


class BrokenQueryConnector(InMemoryConnector):
    """Opens, then every query fails as Procrastinate wraps a psycopg error."""

    async def execute_query_one_async(self, query: str, **arguments: Any) -> dict[str, Any]:
        try:
            raise psycopg.errors.UndefinedTable('relation "pg_proc" does not exist')
        except psycopg.Error as exc:
            raise procrastinate_exceptions.ConnectorException from exc


@pytest.fixture(autouse=True)
def _no_app_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("DAWDLE_APP", "DAWDLE_DEFER_UNKNOWN", "PROCRASTINATE_DEFER_UNKNOWN"):
        monkeypatch.delenv(variable, raising=False)


def make_app(connector: InMemoryConnector) -> App:
    app = App(connector=connector)

    @app.task(name="mail.send", queue="mail")
    async def send(to: str) -> None:
        raise AssertionError("never run here")

    return app


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An importable module holding an App on the in-memory connector with one task."""
    module = types.ModuleType(MODULE)
    module.app = make_app(InMemoryConnector())  # type: ignore[attr-defined]
    module.apps = types.SimpleNamespace(main=module.app)  # type: ignore[attr-defined]
    module.not_an_app = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE, module)
    return module


def with_connector(module: types.ModuleType, connector: InMemoryConnector) -> None:
    module.app = make_app(connector)  # type: ignore[attr-defined]


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2
    return capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown subcommand exits 2 and names it along with the real ones."""
    err = usage_error(capsys, ["bogus"])
    assert "invalid choice: 'bogus'" in err
    assert "worker" in err


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    """`dawdle` alone exits 2 and says a command is needed."""
    assert "required" in usage_error(capsys, [])


def test_worker_options_parse_to_worker_options() -> None:
    """Queues split on commas (names stripped), --one-shot means wait=False, numbers parse."""
    args = build_parser().parse_args(
        [
            "worker",
            "--app=m:app",
            "--queues",
            " mail, reports",
            "--concurrency",
            "8",
            "--one-shot",
            "--delete-jobs",
            "successful",
            "--shutdown-graceful-timeout",
            "2.5",
            "--backend",
            "trio",
            "--unknown-tasks",
            "fail",
            "--max-recoveries",
            "0",
            "-vv",
        ]
    )
    assert args.queues == ["mail", "reports"]
    assert (args.concurrency, args.wait, args.delete_jobs) == (8, False, "successful")
    assert args.unknown_tasks == "fail"
    assert args.max_recoveries == 0
    assert build_parser().parse_args(["worker", "--max-recoveries", "None"]).max_recoveries == (
        "none"
    )
    assert (args.shutdown_graceful_timeout, args.backend, args.verbose) == (2.5, "trio", 2)


def test_worker_options_left_out_stay_unset() -> None:
    """Options not given are None, so the app's worker_defaults apply; asyncio by default."""
    args = build_parser().parse_args(["worker", "--app", "m:app"])
    assert args.queues is args.concurrency is args.wait is args.delete_jobs is None
    assert args.unknown_tasks is args.max_recoveries is None
    assert args.backend == "asyncio"
    assert build_parser().parse_args(["worker", "--wait"]).wait is True


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--concurrency", "0"),
        ("--concurrency", "many"),
        ("--shutdown-graceful-timeout", "-1"),
        ("--shutdown-graceful-timeout", "inf"),
        ("--delete-jobs", "sometimes"),
        ("--unknown-tasks", "skip"),
        ("--max-recoveries", "-1"),
        ("--max-recoveries", "few"),
        ("--backend", "curio"),
    ],
)
def test_bad_worker_option_values_are_named(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """A bad option value exits 2 with an error naming the option and the value."""
    err = usage_error(capsys, ["worker", "--app", "m:app", option, value])
    assert option in err
    assert value in err


def test_wait_and_one_shot_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    """--wait and --one-shot together exit 2."""
    assert "not allowed with" in usage_error(capsys, ["worker", "--wait", "--one-shot"])


def test_schema_needs_apply_or_check(capsys: pytest.CaptureFixture[str]) -> None:
    """`dawdle schema` without --apply or --check exits 2."""
    assert "--apply" in usage_error(capsys, ["schema"])


def test_app_comes_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """DAWDLE_APP is the default of --app; --app wins over it."""
    monkeypatch.setenv("DAWDLE_APP", "env.module:app")
    assert build_parser().parse_args(["healthcheck"]).app == "env.module:app"
    assert build_parser().parse_args(["healthcheck", "--app", "x:app"]).app == "x:app"


@pytest.mark.parametrize("command", [["worker"], ["defer", "mail.send"]])
def test_worker_and_defer_need_an_app(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Without --app or DAWDLE_APP, worker and defer exit 2 saying what is missing."""
    assert "needs --app MODULE:ATTR (or $DAWDLE_APP)" in usage_error(capsys, command)


@pytest.mark.parametrize("path", [f"{MODULE}:app", f"{MODULE}.app", f"{MODULE}:apps.main"])
def test_load_app_takes_colon_and_dotted_paths(app_module: types.ModuleType, path: str) -> None:
    """module:attribute, module.attribute (Procrastinate's form) and module:a.b all load."""
    assert load_app(path) is app_module.app


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("dawdle_no_such_module:app", "no module named 'dawdle_no_such_module'"),
        (f"{MODULE}:missing", f"'{MODULE}' has no attribute 'missing'"),
        (f"{MODULE}:not_an_app", "is a builtins.int, not a dawdle.App"),
        ("app", "expected MODULE:ATTRIBUTE"),
        ("my module:app", "expected MODULE:ATTRIBUTE"),
        (f"{MODULE}:", "expected MODULE:ATTRIBUTE"),
    ],
)
@pytest.mark.usefixtures("app_module")
def test_bad_app_path_is_a_clear_usage_error(
    capsys: pytest.CaptureFixture[str], path: str, message: str
) -> None:
    """An --app that cannot be loaded exits 2 with one line naming the path and the problem."""
    err = usage_error(capsys, ["defer", "--app", path, "mail.send"])
    assert f"--app {path!r}" in err
    assert message in err
    assert "Traceback" not in err


def test_app_module_that_fails_to_import_is_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error inside the app's module is reported in one line with its type, exit 2."""

    def broken_import(name: str, *args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("division by zero in settings")

    monkeypatch.setattr("importlib.import_module", broken_import)
    err = usage_error(capsys, ["worker", "--app", "myproject.tasks:app"])
    assert "importing 'myproject.tasks' failed: ZeroDivisionError: division by zero" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("app_module")
def test_unknown_task_lists_known_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    """Deferring an unregistered task exits 2 and lists the tasks the app has."""
    err = usage_error(capsys, ["defer", "--app", f"{MODULE}:app", "mail.sned"])
    assert "no task named 'mail.sned' on this app (--unknown defers it anyway)" in err
    assert err.endswith("known tasks: mail.send\n")


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize(
    ("flag", "variables"),
    [
        ("--no-unknown", {"PROCRASTINATE_DEFER_UNKNOWN": "1"}),
        (None, {"PROCRASTINATE_DEFER_UNKNOWN": "no"}),
        (None, {"DAWDLE_DEFER_UNKNOWN": "f", "PROCRASTINATE_DEFER_UNKNOWN": "t"}),
        (None, {"PROCRASTINATE_DEFER_UNKNOWN": ""}),
    ],
)
def test_unknown_task_stays_an_error_unless_allowed(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    variables: dict[str, str],
) -> None:
    """--no-unknown beats the variables, DAWDLE_ beats PROCRASTINATE_, empty is unset: exit 2."""
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    flags = [] if flag is None else [flag]
    err = usage_error(capsys, ["defer", "--app", f"{MODULE}:app", *flags, "mail.sned"])
    assert "no task named 'mail.sned'" in err


@pytest.mark.parametrize("variable", ["DAWDLE_DEFER_UNKNOWN", "PROCRASTINATE_DEFER_UNKNOWN"])
def test_bad_defer_unknown_variable_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A DEFER_UNKNOWN value that is not yes/no exits 2 naming the variable and the value."""
    monkeypatch.setenv(variable, "maybe")
    err = usage_error(capsys, ["defer", "other.task"])
    assert f"${variable}='maybe': expected 1/y/t (yes) or 0/n/f (no)" in err


@pytest.mark.usefixtures("app_module")
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{to: 'a'}", "not valid JSON: \"{to: 'a'}\""),
        ('["a"]', "expected a JSON object"),
        ("", "not valid JSON: ''"),
    ],
)
def test_bad_json_names_the_value(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    """--json that is not a JSON object exits 2 with an error quoting the value."""
    err = usage_error(capsys, ["defer", "--app", f"{MODULE}:app", "mail.send", "--json", value])
    assert "argument --json" in err
    assert message in err


@BACKENDS
def test_defer_prints_the_job_id_and_applies_options(
    app_module: types.ModuleType, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A deferred job has the JSON's arguments and the given queue, lock, priority, schedule."""
    code = main(
        [
            "defer",
            "--backend",
            backend,
            "--app",
            f"{MODULE}:app",
            "mail.send",
            "--json",
            '{"to": "ada@example.org"}',
            "--queue",
            "urgent",
            "--lock",
            "ada",
            "--queueing-lock",
            "ada-mail",
            "--priority",
            "7",
            "--schedule-in",
            "60",
        ]
    )
    assert code == 0
    connector = app_module.app.connector
    assert isinstance(connector, InMemoryConnector)
    (job,) = connector.jobs.values()
    assert capsys.readouterr().out == f"{job['id']}\n"
    assert job["args"] == {"to": "ada@example.org"}
    assert (job["queue_name"], job["lock"], job["queueing_lock"]) == ("urgent", "ada", "ada-mail")
    assert job["priority"] == 7
    assert job["scheduled_at"] is not None


@BACKENDS
@pytest.mark.parametrize(
    ("flag", "variables"),
    [
        ("--unknown", {}),
        ("--unknown", {"DAWDLE_DEFER_UNKNOWN": "0"}),
        (None, {"PROCRASTINATE_DEFER_UNKNOWN": "yes"}),
        (None, {"DAWDLE_DEFER_UNKNOWN": "1", "PROCRASTINATE_DEFER_UNKNOWN": "n"}),
    ],
)
def test_defer_unknown_defers_by_name_with_options(
    app_module: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    flag: str | None,
    variables: dict[str, str],
) -> None:
    """--unknown (or a DEFER_UNKNOWN variable) defers an unregistered name with every option."""
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    flags = [] if flag is None else [flag]
    argv = ["defer", "--backend", backend, "--app", f"{MODULE}:app", *flags, "billing.invoice"]
    options = ["--queue", "billing", "--lock", "acct-9", "--queueing-lock", "inv-9"]
    code = main([*argv, *options, "--priority", "-2", "--schedule-in", "30", "--json", "{}"])
    assert code == 0
    connector = app_module.app.connector
    assert isinstance(connector, InMemoryConnector)
    (job,) = connector.jobs.values()
    assert (job["task_name"], job["queue_name"]) == ("billing.invoice", "billing")
    assert (job["lock"], job["queueing_lock"], job["priority"]) == ("acct-9", "inv-9", -2)
    assert job["scheduled_at"] is not None


@BACKENDS
def test_defer_unknown_keeps_a_registered_tasks_defaults(
    app_module: types.ModuleType, backend: str
) -> None:
    """With --unknown, a name the app does register still gets that task's queue."""
    assert (
        main(["defer", "--backend", backend, "--app", f"{MODULE}:app", "--unknown", "mail.send"])
        == 0
    )
    connector = app_module.app.connector
    assert isinstance(connector, InMemoryConnector)
    (job,) = connector.jobs.values()
    assert (job["task_name"], job["queue_name"]) == ("mail.send", "mail")


@BACKENDS
def test_defer_takes_the_app_from_the_environment(
    app_module: types.ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """With DAWDLE_APP set, `dawdle defer TASK` needs no --app; the task's queue is kept."""
    monkeypatch.setenv("DAWDLE_APP", f"{MODULE}.app")
    assert main(["defer", "--backend", backend, "mail.send", "--json", '{"to": "b"}']) == 0
    connector = app_module.app.connector
    assert isinstance(connector, InMemoryConnector)
    (job,) = connector.jobs.values()
    assert job["queue_name"] == "mail"


@BACKENDS
@pytest.mark.parametrize("command", [["schema", "--check"], ["defer", "mail.send"], ["worker"]])
def test_unreachable_database_is_one_line_without_traceback(
    app_module: types.ModuleType,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    command: list[str],
) -> None:
    """DatabaseUnavailable ends the command with exit 1 and one line on stderr."""
    with_connector(app_module, UnreachableConnector())
    code = main([*command, "--backend", backend, "--app", f"{MODULE}:app"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"dawdle {command[0]}: error: cannot connect to PostgreSQL at host=db dbname=jobs\n"
    )


@BACKENDS
def test_verbose_adds_the_traceback(
    app_module: types.ModuleType, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """With -v, the same failure also prints its traceback."""
    with_connector(app_module, UnreachableConnector())
    assert main(["schema", "--check", "-v", "--backend", backend, "--app", f"{MODULE}:app"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith(
        "dawdle schema: error: cannot connect to PostgreSQL at host=db dbname=jobs\n"
    )


@BACKENDS
def test_errors_inside_exception_groups_are_reported_one_line_each(
    app_module: types.ModuleType, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A dawdle error wrapped by a task group is still one line, exit 1."""
    with_connector(app_module, GroupedFailureConnector())
    assert main(["schema", "--apply", "--backend", backend, "--app", f"{MODULE}:app"]) == 1
    assert capsys.readouterr().err == "dawdle schema: error: server closed the connection\n"


@BACKENDS
def test_database_errors_name_their_cause(
    app_module: types.ModuleType, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """Procrastinate's bare "Database error." is completed with the psycopg error behind it."""
    with_connector(app_module, BrokenQueryConnector())
    assert main(["schema", "--check", "--backend", backend, "--app", f"{MODULE}:app"]) == 1
    assert capsys.readouterr().err == (
        'dawdle schema: error: Database error. relation "pg_proc" does not exist\n'
    )


@BACKENDS
def test_healthcheck_reports_an_unreachable_database_as_unhealthy(
    app_module: types.ModuleType, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """The healthcheck exits 1 with a one-line reason when the database cannot be reached."""
    with_connector(app_module, UnreachableConnector())
    assert main(["healthcheck", "--backend", backend, "--app", f"{MODULE}:app"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "unhealthy: cannot connect to PostgreSQL at host=db dbname=jobs\n"


# -- health and schema reports on real PostgreSQL ---------------------------------------------

HEALTH_TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events RESTART IDENTITY CASCADE"
)
DEFER = (
    "SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW('default', %(task)s, 0, NULL, NULL, "
    "'{}'::jsonb, now() + make_interval(secs => %(in_seconds)s))"
    "::procrastinate_job_to_defer_v1]))[1] AS id"
)
HEALTH_REPORT = """\
database: reachable
schema: current (version 3.4.0)
jobs: todo 5
workers: {live} with a heartbeat in the last 30 s
unknown tasks: 3 ready jobs of tasks no live worker published
  legacy.task: 2 jobs, oldest deferred 2 h 5 min ago
  reports.build: 1 job, age unknown (no deferred event)
"""
UNKNOWN = "3 ready jobs of tasks no live worker knows: legacy.task, reports.build"


@pytest.fixture
def health_dsn(database_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's database with both schemas, no jobs and no workers; dawdle's default DSN."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
        if row is not None and not row[0]:
            conn.execute(schema.SchemaManager.get_schema())
        conn.execute(DAWDLE_SCHEMA)
        conn.execute(HEALTH_TRUNCATE)
    monkeypatch.setenv("DAWDLE_DSN", database_dsn)
    return database_dsn


def execute(dsn: str, query: str, **params: Any) -> Any:
    """Run one statement; its first row's first column, if it returns one."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]


def add_worker(dsn: str, *, tasks: list[str] | None, stale: bool = False) -> None:
    """A worker row, alive unless `stale`, with published `tasks` (None: a Procrastinate one)."""
    worker_id = execute(dsn, "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
    if stale:
        execute(
            dsn,
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
            "WHERE id = %(id)s",
            id=worker_id,
        )
    if tasks is not None:
        execute(
            dsn,
            "INSERT INTO dawdle_worker_tasks (worker_id, task_names) VALUES (%(id)s, %(names)s)",
            id=worker_id,
            names=tasks,
        )


def add_jobs(dsn: str) -> None:
    """Ready jobs of a known task and two unknown ones (one eventless); one not ready yet."""
    execute(dsn, DEFER, task="mail.send", in_seconds=-1)
    oldest = execute(dsn, DEFER, task="legacy.task", in_seconds=-1)
    execute(
        dsn,
        "UPDATE procrastinate_events SET at = now() - interval '2 hours 5 minutes' "
        "WHERE job_id = %(id)s",
        id=oldest,
    )
    execute(dsn, DEFER, task="legacy.task", in_seconds=-1)
    eventless = execute(dsn, DEFER, task="reports.build", in_seconds=-1)
    execute(dsn, "DELETE FROM procrastinate_events WHERE job_id = %(id)s", id=eventless)
    execute(dsn, DEFER, task="later.task", in_seconds=3600)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "age unknown (no deferred event)"),
        (-3.0, "oldest deferred 0 s ago"),
        (45.9, "oldest deferred 45 s ago"),
        (12 * 60 + 5, "oldest deferred 12 min ago"),
        (3 * 3600 + 5 * 60, "oldest deferred 3 h 5 min ago"),
        (2 * 86400 + 4 * 3600 + 59, "oldest deferred 2 d 4 h ago"),
    ],
)
def test_ages_read_in_the_largest_units(seconds: float | None, text: str) -> None:
    """An age is whole seconds, minutes, hours and minutes, or days and hours; None is unknown."""
    assert describe_age(seconds) == text


@BACKENDS
def test_healthcheck_warns_about_ready_jobs_no_live_worker_knows(
    health_dsn: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """Unknown ready jobs are listed with their age, warned on stderr, and still healthy."""
    add_worker(health_dsn, tasks=["mail.send", "later.task"])
    add_worker(health_dsn, tasks=["legacy.task"], stale=True)  # dead: knows nothing now
    add_jobs(health_dsn)
    assert main(["healthcheck", "--backend", backend]) == 0
    captured = capsys.readouterr()
    assert captured.out == HEALTH_REPORT.format(live=1) + "healthy\n"
    assert captured.err == f"warning: {UNKNOWN}\n"


@BACKENDS
def test_strict_healthcheck_fails_on_ready_jobs_no_live_worker_knows(
    health_dsn: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """With --strict, the same jobs are unhealthy: exit 1 and the reason on stderr."""
    add_worker(health_dsn, tasks=["mail.send"])
    add_jobs(health_dsn)
    assert main(["healthcheck", "--strict", "--backend", backend]) == 1
    captured = capsys.readouterr()
    assert captured.out == HEALTH_REPORT.format(live=1)
    assert captured.err == f"unhealthy: {UNKNOWN}\n"


@BACKENDS
@pytest.mark.parametrize("strict", [[], ["--strict"]])
def test_live_workers_without_published_tasks_may_know_them(
    health_dsn: str, capsys: pytest.CaptureFixture[str], backend: str, strict: list[str]
) -> None:
    """A live worker that published nothing (Procrastinate's) may know them: a warning only."""
    add_worker(health_dsn, tasks=["mail.send"])
    add_worker(health_dsn, tasks=None)
    add_jobs(health_dsn)
    assert main(["healthcheck", *strict, "--backend", backend]) == 0
    captured = capsys.readouterr()
    silent = "1 live worker did not publish its tasks (a Procrastinate worker?)"
    assert captured.out == (
        HEALTH_REPORT.format(live=2) + f"  {silent}: it may know them\nhealthy\n"
    )
    assert captured.err == (
        "warning: 3 ready jobs of tasks no live worker published: legacy.task, reports.build; "
        f"{silent}\n"
    )


@BACKENDS
def test_healthcheck_without_unknown_tasks_says_none(
    health_dsn: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """Every ready job's task published by a live worker: no warning, even with --strict."""
    add_worker(health_dsn, tasks=["mail.send"])
    execute(health_dsn, DEFER, task="mail.send", in_seconds=-1)
    assert main(["healthcheck", "--strict", "--backend", backend]) == 0
    captured = capsys.readouterr()
    assert "unknown tasks: none (every ready job's task is known to a live worker)\n" in (
        captured.out
    )
    assert captured.err == ""


@BACKENDS
def test_healthcheck_without_dawdle_table_says_what_to_run(
    health_dsn: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """No dawdle_worker_tasks: not checked, naming the fix; healthy unless --strict."""
    execute(health_dsn, "DROP TABLE dawdle_worker_tasks")
    add_worker(health_dsn, tasks=None)
    add_jobs(health_dsn)
    fix = "the database has no dawdle_worker_tasks table: run `dawdle schema --apply`"
    assert main(["healthcheck", "--backend", backend]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith(f"unknown tasks: not checked: {fix}\nhealthy\n")
    assert captured.err == ""
    assert main(["healthcheck", "--strict", "--backend", backend]) == 1
    assert capsys.readouterr().err == f"unhealthy: unknown tasks not checked: {fix}\n"


@BACKENDS
def test_schema_check_and_apply_report_dawdle_tables(
    health_dsn: str, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--check exits 1 naming a missing dawdle table; --apply creates it; --check then passes."""
    execute(health_dsn, "DROP TABLE dawdle_worker_tasks, dawdle_queue_pauses")
    assert main(["schema", "--check", "--backend", backend]) == 1
    assert capsys.readouterr().out == (
        "present: yes\nversion: 3.4.0\nmissing: none\n"
        "dawdle tables missing: dawdle_worker_tasks, dawdle_queue_pauses\n"
    )
    assert main(["schema", "--apply", "--backend", backend]) == 0
    assert capsys.readouterr().out == (
        "schema already current (version 3.4.0); "
        "dawdle tables: created dawdle_worker_tasks, dawdle_queue_pauses\n"
    )
    assert main(["schema", "--check", "--backend", backend]) == 0
    assert capsys.readouterr().out.endswith("dawdle tables missing: none\n")
