"""The `dawdle` command's errors: one line on stderr, the right exit code, never a password.

Commands that run go through `anyio.run`, so those tests run on both backends (the
`--backend` option); the rest fail while parsing, before any event loop.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from typing import Any

import psycopg
import pytest
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions as procrastinate_exceptions

from dawdle import App, ConfigurationError, InMemoryConnector
from dawdle._cli import MAX_JSON_DEPTH, main
from dawdle._cli_errors import MAX_LINE, RedactingFormatter, redact

MODULE = "dawdle_cli_errors_test_app"
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
BAD_DSNS = [
    "postgresql://postgres:S3cr%zzet@127.0.0.1/x",
    "not a dsn at all",
    "password=S3cret PW",
]
SECRET = "S3cr"  # noqa: S105 (the fake password of BAD_DSNS, to check it never leaks)


class FailingConnector(InMemoryConnector):
    """Fails to open with the exception it was given."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def open_async(self, pool: procrastinate_connector.Pool | None = None) -> None:
        raise self.error


class SqlErrorConnector(InMemoryConnector):
    """Opens, then every query fails with a psycopg error that carries SQL on later lines."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__()
        self.error = error

    async def execute_query_one_async(self, query: str, **arguments: Any) -> dict[str, Any]:
        raise procrastinate_exceptions.ConnectorException from self.error


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (
        "DAWDLE_APP",
        "DAWDLE_DSN",
        "DATABASE_URL",
        "PGPASSWORD",
        "DAWDLE_DEFER_UNKNOWN",
        "PROCRASTINATE_DEFER_UNKNOWN",
    ):
        monkeypatch.delenv(variable, raising=False)


def install_app(monkeypatch: pytest.MonkeyPatch, connector: InMemoryConnector) -> str:
    """An importable module whose `app` uses `connector`; its --app path."""
    module = types.ModuleType(MODULE)
    app = App(connector=connector)

    @app.task(name="mail.send")
    async def send(to: str) -> None:
        raise AssertionError("never run here")

    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE, module)
    return f"{MODULE}:app"


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    """main(argv)'s exit code (returned or raised), stdout and stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, *, starts: str) -> str:
    """`err` is exactly one line starting with `starts`; that line."""
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert err.startswith(starts), err
    assert "Traceback" not in err
    assert "usage:" not in err
    return err.rstrip("\n")


# -- connection strings ------------------------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize("dsn", BAD_DSNS)
@pytest.mark.parametrize(
    "command", [["schema", "--check"], ["healthcheck"], ["defer", "--unknown", "mail.send"]]
)
def test_bad_dsn_is_one_line_exit_2_without_the_password(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    dsn: str,
    command: list[str],
) -> None:
    """A DAWDLE_DSN that libpq cannot parse: exit 2, one line, the password nowhere."""
    monkeypatch.setenv("DAWDLE_DSN", dsn)
    code, out, err = run_cli(capsys, [*command, "--backend", backend])
    assert code == 2
    assert_one_line(err, starts=f"dawdle {command[0]}: error: ")
    assert SECRET not in out + err


@BACKENDS
@pytest.mark.parametrize("dsn", BAD_DSNS)
def test_verbose_traceback_hides_the_password_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, backend: str, dsn: str
) -> None:
    """With -v the traceback is shown, redacted, and the error line still ends the output."""
    monkeypatch.setenv("DAWDLE_DSN", dsn)
    code, out, err = run_cli(capsys, ["schema", "--check", "-v", "--backend", backend])
    assert code == 2
    assert "Traceback" in err
    assert err.splitlines()[-1].startswith("dawdle schema: error: ")
    assert SECRET not in out + err


@pytest.mark.parametrize("dsn", BAD_DSNS)
def test_bad_dsn_through_the_real_command(dsn: str) -> None:
    """`python -m dawdle schema --check` in a process of its own: exit 2, one line, no secret."""
    environment = {**os.environ, "DAWDLE_DSN": dsn}
    environment.pop("DAWDLE_APP", None)
    result = subprocess.run(
        [sys.executable, "-m", "dawdle", "schema", "--check"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert_one_line(result.stderr, starts="dawdle schema: error: ")
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "could not connect to postgresql://ada:S3cret@db:5432/jobs",
        "postgresql://ada:S3c@ret@db/jobs",
        "invalid dsn: 'host=db password=S3cret port=5432'",
        "host=db PASSWORD = 'S3cret with \\' spaces' port=5432",
        'host=db password="S3cret"',
        "postgresql://db/jobs?sslmode=require&password=S3cret",
        "kwargs={'host': 'db', 'password': 'S3cret'}",
    ],
)
def test_passwords_that_look_like_passwords_are_hidden(text: str) -> None:
    """Key/value, quoted or not, URI userinfo and query, and a dict's repr: all hidden."""
    redacted = redact(text)
    assert "S3c" not in redacted
    assert "***" in redacted


def test_text_without_passwords_is_unchanged() -> None:
    """Host, port, user and database stay: they are what the reader needs to fix it."""
    text = "cannot connect to PostgreSQL at host=db port=5432 dbname=jobs user=ada"
    assert redact(text) == text
    assert redact("postgresql://ada@db:5432/jobs") == "postgresql://ada@db:5432/jobs"


def test_known_passwords_are_hidden_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords of DAWDLE_DSN, DATABASE_URL and PGPASSWORD are hidden even quoted alone."""
    monkeypatch.setenv("DAWDLE_DSN", "postgresql://ada:S3cr%zzet@db/x")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bob:Tw0%40pass@db/x")
    monkeypatch.setenv("PGPASSWORD", "Thr33word")
    redacted = redact('token "S3cr%zzet"; Tw0@pass; Tw0%40pass; Thr33word')
    assert redacted == 'token "***"; ***; ***; ***'


def test_log_lines_are_redacted() -> None:
    """The CLI's log formatter hides passwords in the message and in the traceback."""

    def lose_connection() -> None:
        raise RuntimeError("lost postgresql://ada:S3cret@db/x")

    try:
        lose_connection()
    except RuntimeError:
        record = logging.LogRecord(
            "dawdle", logging.ERROR, __file__, 1, "dsn %s", ("password=S3cret",), sys.exc_info()
        )
    text = RedactingFormatter("%(message)s").format(record)
    assert "S3cret" not in text
    assert "Traceback" in text


# -- failures at run time ----------------------------------------------------------------------


@BACKENDS
def test_sql_on_later_lines_of_a_database_error_is_not_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Only a database error's first line is printed: the statement after it never is."""
    error = psycopg.errors.DataException(
        "value too long for type character varying(100)\n"
        'CONTEXT: SQL function "procrastinate_defer_jobs_v1" statement 1\n'
        "LINE 1: SELECT procrastinate_defer_jobs_v1(...)"
    )
    app = install_app(monkeypatch, SqlErrorConnector(error))
    code, _, err = run_cli(capsys, ["schema", "--check", "--backend", backend, "--app", app])
    assert code == 1
    line = assert_one_line(err, starts="dawdle schema: error: ")
    assert line.endswith("value too long for type character varying(100)")
    assert "SELECT" not in err
    assert "CONTEXT" not in err


@BACKENDS
def test_a_missing_procrastinate_object_points_to_schema_apply(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """`type "procrastinate_..." does not exist` says to run `dawdle schema --apply`."""
    error = psycopg.errors.UndefinedObject('type "procrastinate_job_to_defer_v1[]" does not exist')
    app = install_app(monkeypatch, SqlErrorConnector(error))
    code, _, err = run_cli(capsys, ["schema", "--check", "--backend", backend, "--app", app])
    assert code == 1
    line = assert_one_line(err, starts="dawdle schema: error: ")
    assert line.endswith("(is the schema applied? run `dawdle schema --apply`)")


@BACKENDS
def test_a_huge_message_is_cut(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A message quoting a 10,000-character value is cut to one line of bounded length."""
    error = ConfigurationError(f"queue {'q' * 10_000!r} is too long")
    app = install_app(monkeypatch, FailingConnector(error))
    code, _, err = run_cli(capsys, ["schema", "--check", "--backend", backend, "--app", app])
    assert code == 2
    line = assert_one_line(err, starts="dawdle schema: error: ")
    assert len(line) < MAX_LINE + 100
    assert line.endswith(f"(cut at {MAX_LINE} characters)")


@BACKENDS
@pytest.mark.parametrize("command", [["schema", "--check"], ["healthcheck"]])
def test_an_unexpected_error_is_one_line_naming_its_type(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    command: list[str],
) -> None:
    """A bug's exception is one line with its type and a pointer to -v; exit 1."""
    app = install_app(monkeypatch, FailingConnector(RuntimeError("boom\nsecond line")))
    code, _, err = run_cli(capsys, [*command, "--backend", backend, "--app", app])
    assert code == 1
    line = assert_one_line(err, starts="")
    assert line.endswith("unexpected RuntimeError: boom (-v for the traceback)")


@BACKENDS
@pytest.mark.parametrize("command", [["schema", "--check"], ["healthcheck"]])
def test_a_configuration_error_at_run_time_exits_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    command: list[str],
) -> None:
    """A value refused once the command runs (ConfigurationError) is bad input: exit 2."""
    error = ConfigurationError("PsycopgConnector: max_size=0 must be >= 1")
    app = install_app(monkeypatch, FailingConnector(error))
    code, _, err = run_cli(capsys, [*command, "--backend", backend, "--app", app])
    assert code == 2
    assert assert_one_line(err, starts=f"dawdle {command[0]}: error: ").endswith(
        "max_size=0 must be >= 1"
    )


def test_an_app_whose_import_paths_fail_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import path that does not import: exit 2, one line naming it and the error."""
    module = types.ModuleType(MODULE)
    module.app = App(  # type: ignore[attr-defined]
        connector=InMemoryConnector(), import_paths=["dawdle_no_such_module"]
    )
    monkeypatch.setitem(sys.modules, MODULE, module)
    code, _, err = run_cli(capsys, ["defer", "--app", f"{MODULE}:app", "mail.send"])
    assert code == 2
    line = assert_one_line(err, starts="dawdle defer: error: ")
    assert line.endswith(
        "importing the app's import_paths ('dawdle_no_such_module') failed: "
        "ModuleNotFoundError: No module named 'dawdle_no_such_module'"
    )


def test_a_failure_while_preparing_a_command_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error before the event loop starts (not a UsageError) is one line too, exit 1."""

    def broken_command(args: object) -> None:
        raise OSError("disk full\nmore detail")

    monkeypatch.setattr("dawdle._cli.cmd_schema", broken_command)
    code, _, err = run_cli(capsys, ["schema", "--check"])
    assert code == 1
    line = assert_one_line(err, starts="dawdle schema: error: ")
    assert line.endswith("unexpected OSError: disk full (-v for the traceback)")


# -- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["worker", "--bogus"],
        ["worker", "--concurrency", "0"],
        ["worker", "--wait", "--one-shot"],
        ["schema"],
        ["defer"],
        ["healthcheck", "extra"],
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """No usage block: one line saying what is wrong, ending with where the help is."""
    code, out, err = run_cli(capsys, argv)
    assert code == 2
    assert out == ""
    line = assert_one_line(err, starts="dawdle")
    assert line.endswith("--help')")


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["worker", "--queues", ""], "''"),
        (["worker", "--queues", ","], "','"),
        (["worker", "--queues", " , "], "' , '"),
        (["worker", "--queues", "mail,,reports"], "'mail,,reports'"),
        (["worker", "--queues", "mail,"], "'mail,'"),
        (["worker", "--name", ""], "''"),
        (["worker", "--concurrency", "-1"], "'-1'"),
        (["worker", "--concurrency", "nan"], "'nan'"),
        (["worker", "--concurrency", "1.5"], "'1.5'"),
        (["worker", "--shutdown-graceful-timeout", "nan"], "'nan'"),
        (["worker", "--shutdown-graceful-timeout", "-0.5"], "'-0.5'"),
        (["defer", "mail.send", "--queue", ""], "''"),
        (["defer", "mail.send", "--lock", " "], "' '"),
        (["defer", "mail.send", "--queueing-lock", ""], "''"),
        (["defer", ""], "''"),
        (["defer", "mail.send", "--priority", "2147483648"], "'2147483648'"),
        (["defer", "mail.send", "--priority", "-2147483649"], "'-2147483649'"),
        (["defer", "mail.send", "--priority", "high"], "'high'"),
        (["defer", "mail.send", "--schedule-in", "1e300"], "'1e300'"),
        (["defer", "mail.send", "--schedule-in", "nan"], "'nan'"),
        (["healthcheck", "--timeout", "0"], "'0'"),
        (["healthcheck", "--timeout", "inf"], "'inf'"),
    ],
)
def test_bad_values_are_refused_naming_them(
    capsys: pytest.CaptureFixture[str], argv: list[str], value: str
) -> None:
    """Empty names, out-of-range and non-finite numbers: exit 2, one line naming the value."""
    code, _, err = run_cli(capsys, argv)
    assert code == 2
    line = assert_one_line(err, starts=f"dawdle {argv[0]}: error: ")
    assert f"got {value}" in line


def nested(depth: int) -> str:
    """A JSON object nesting `depth` objects."""
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (nested(950), f"nested more than {MAX_JSON_DEPTH} levels deep"),
        (nested(100_000), f"nested more than {MAX_JSON_DEPTH} levels deep"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": -Infinity}', "-Infinity is not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('"text"', "expected a JSON object"),
        ('{"a": ', "not valid JSON"),
        ("{" * 5000, "not valid JSON: '{{{{"),
    ],
)
def test_bad_json_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """Too deep, NaN, not an object, invalid: exit 2, one line of bounded length."""
    code, _, err = run_cli(capsys, ["defer", "--unknown", "mail.send", "--json", text])
    assert code == 2
    line = assert_one_line(err, starts="dawdle defer: error: argument --json: ")
    assert message in line
    assert len(line) < 300


@BACKENDS
def test_json_at_the_depth_limit_is_accepted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Exactly MAX_JSON_DEPTH levels are deferred; one more is refused."""
    argv = ["defer", "--backend", backend, "--app", install_app(monkeypatch, InMemoryConnector())]
    code, out, err = run_cli(capsys, [*argv, "mail.send", "--json", nested(MAX_JSON_DEPTH)])
    assert (code, err) == (0, "")
    assert out.strip().isdigit()
    code, _, err = run_cli(capsys, [*argv, "mail.send", "--json", nested(MAX_JSON_DEPTH + 1)])
    assert code == 2
