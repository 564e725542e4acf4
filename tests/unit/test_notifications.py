"""Notification payloads: hints parsed defensively, malformed ones named and logged once."""

from __future__ import annotations

import logging

import pytest

from dawdle._worker.notifications import Hint, Malformed, MalformedLog, QueueResumed, parse


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        ('{"type": "job_inserted", "job_id": 3}', Hint("job_inserted", 3)),
        ('{"type": "abort_job_requested", "job_id": 7}', Hint("abort_job_requested", 7)),
        ('{"type": "queue_resumed", "queue": "mail"}', QueueResumed("mail")),
        ('{"type": "queue_resumed", "queue": 7}', Malformed("no string queue")),
        ('{"type": "queue_resumed"}', Malformed("no string queue")),
        ("not json", Malformed("not JSON")),
        ("[" * 100_000, Malformed("not JSON")),
        ("[]", Malformed("not a JSON object")),
        ('"abort"', Malformed("not a JSON object")),
        ('{"type": "abort_job_requested"}', Malformed("no integer job_id")),
        ('{"type": "abort_job_requested", "job_id": "7"}', Malformed("no integer job_id")),
        ('{"type": "abort_job_requested", "job_id": true}', Malformed("no integer job_id")),
        ('{"type": "abort_job_requested", "job_id": 7.5}', Malformed("no integer job_id")),
        ('{"type": "drop_tables", "job_id": 7}', Malformed("an unknown type")),
        ('{"job_id": 7}', Malformed("an unknown type")),
    ],
)
def test_parse(payload: str, parsed: Hint | QueueResumed | Malformed) -> None:
    """Procrastinate's two payloads and dawdle's resume parse; anything else says what is wrong."""
    assert parse(payload) == parsed


def test_malformed_payloads_are_logged_once_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of forged payloads logs one warning per kind of problem, quoting a little."""
    log = MalformedLog()
    with caplog.at_level(logging.WARNING, logger="dawdle.worker"):
        for _ in range(1_000):
            log.ignored(channel="c", payload="x" * 10_000, malformed=Malformed("not JSON"))
            log.ignored(channel="c", payload="[]", malformed=Malformed("not a JSON object"))
    assert [record.problem for record in caplog.records] == [  # type: ignore[attr-defined]
        "not JSON",
        "not a JSON object",
    ]
    assert len(caplog.records[0].getMessage()) < 400
