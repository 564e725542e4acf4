"""`dawdle queue pause|resume|list`, on an app of the in-memory connector, on both backends.

The command run as a process, on PostgreSQL, is in
tests/durability/worker/test_queue_pause.py.
"""

from __future__ import annotations

import datetime
import json
import sys
import types

import pytest

from dawdle import App, InMemoryConnector, QueueState
from dawdle._cli import main
from dawdle._cli_queue import describe_state

MODULE = "dawdle_cli_queue_test_app"
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> App:
    """An App on the in-memory connector, importable as MODULE:app."""
    monkeypatch.delenv("DAWDLE_APP", raising=False)
    module = types.ModuleType(MODULE)
    module.app = App(connector=InMemoryConnector())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE, module)
    return module.app  # type: ignore[no-any-return]


def queue(backend: str, *arguments: str) -> int:
    return main(["queue", *arguments, "--app", f"{MODULE}:app", "--backend", backend])


@BACKENDS
def test_pause_list_resume_say_what_they_did(
    app: App, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """Each action prints one line; repeating one is not an error; list shows the reason."""
    connector = app.connector
    assert isinstance(connector, InMemoryConnector)
    assert queue(backend, "pause", "mail", "--reason", "smtp down") == 0
    assert queue(backend, "pause", "mail") == 0
    assert capsys.readouterr().out == "paused queue 'mail'\nqueue 'mail' was paused already\n"
    assert connector.queue_pauses["mail"]["reason"] == "smtp down"
    assert queue(backend, "list") == 0
    assert capsys.readouterr().out.startswith("mail  paused since ")
    assert queue(backend, "list", "--json") == 0
    (state,) = json.loads(capsys.readouterr().out)
    assert (state["queue"], state["paused"], state["reason"]) == ("mail", True, "smtp down")
    assert queue(backend, "resume", "mail") == 0
    assert queue(backend, "resume", "mail") == 0
    assert capsys.readouterr().out == "resumed queue 'mail'\nqueue 'mail' was not paused\n"
    assert connector.queue_pauses == {}


@BACKENDS
def test_list_shows_queues_with_jobs_and_says_when_there_are_none(
    app: App, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """No queue at all is said in words; a queue with jobs is listed as active."""
    assert queue(backend, "list") == 0
    assert capsys.readouterr().out == "no queues: no jobs and no pauses\n"
    app.configure_task("t", allow_unknown=True, queue="reports").defer()
    assert queue(backend, "list") == 0
    assert capsys.readouterr().out == "reports  active\n"
    assert queue(backend, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {"queue": "reports", "paused": False, "paused_at": None, "paused_by": None, "reason": None}
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["pause", ""], "a queue name must be a non-blank str of at most 128 characters, got ''"),
        (["resume", "q" * 129], "a queue name must be a non-blank str"),
        (["pause", "mail", "--reason", "r" * 1001], "a pause's reason must be a str of at most"),
        (["pause"], "the following arguments are required: NAME"),
        (["stop", "mail"], "invalid choice: 'stop'"),
    ],
)
def test_bad_input_is_one_line_naming_it(
    app: App, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    """A bad name, reason or action exits 2 with one line that names it."""
    with pytest.raises(SystemExit) as exc_info:
        main(["queue", *arguments, "--app", f"{MODULE}:app"])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_a_paused_state_reads_as_one_line() -> None:
    """Paused: since when, by whom, why; active: just that."""
    since = datetime.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=datetime.UTC)
    paused = QueueState("mail", paused_at=since, paused_by="ops", reason="smtp down")
    assert (
        describe_state(paused) == "mail  paused since 2026-01-02 03:04:05+00:00 by ops: smtp down"
    )
    assert describe_state(QueueState("mail", paused_at=since, paused_by="ops")).endswith("by ops")
    assert describe_state(QueueState("mail")) == "mail  active"


def test_control_characters_cannot_break_the_line() -> None:
    """A reason or name with a newline or an escape sequence is printed escaped, on one line."""
    since = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    state = QueueState("ma\nil", paused_at=since, paused_by="ops", reason="down\n\x1b[2Jgone")
    line = describe_state(state)
    assert "\n" not in line
    assert "\x1b" not in line
    assert line.startswith("ma\\nil  paused")
    assert line.endswith(": down\\n\\x1b[2Jgone")
