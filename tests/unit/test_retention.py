"""Retention's settings: `App(retention=...)` checked, durations parsed, statuses grouped."""

from __future__ import annotations

import datetime

import pytest

from dawdle import App, ConfigurationError, InMemoryConnector
from dawdle._retention import Retention, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text, where="d") == seconds
    assert parse_duration(f" {text.upper()} ", where="d") == seconds


def test_durations_also_come_as_seconds_or_timedeltas() -> None:
    assert parse_duration(90, where="d") == 90
    assert parse_duration(datetime.timedelta(hours=2), where="d") == 7200
    assert [format_duration(s) for s in (45, 1800, 43200, 604800, 90, 1.5)] == [
        "45s",
        "30m",
        "12h",
        "7d",
        "90s",
        "1.5s",
    ]


def test_retention_groups_statuses_by_duration_shortest_first() -> None:
    retention = Retention.from_option(
        {
            "failed": "30d",
            "succeeded": "1d",
            "cancelled": "1d",
            "aborted": datetime.timedelta(days=30),
        }
    )
    assert retention is not None
    assert retention.prunes() == [
        (("succeeded", "cancelled"), 86400.0),
        (("failed", "aborted"), 30 * 86400.0),
    ]
    assert App(connector=InMemoryConnector()).retention is None


@pytest.mark.parametrize(
    ("retention", "named"),
    [
        ({"todo": "1d"}, "'todo' is not a finished status"),
        ({"succeded": "1d"}, "'succeded' is not a finished status"),
        ({"succeeded": "1 day"}, "retention['succeeded'] must be a duration"),
        ({"succeeded": "0s"}, "got '0s'"),
        ({"failed": -5}, "retention['failed'] must be a duration"),
        ({"failed": True}, "got True"),
        ({"failed": None}, "got None"),
        ({}, "non-empty dict"),
        ("1d", "got '1d'"),
        ([("succeeded", "1d")], "non-empty dict"),
    ],
)
def test_bad_retention_is_refused_naming_it(retention: object, named: str) -> None:
    with pytest.raises(ConfigurationError, match="retention") as info:
        App(connector=InMemoryConnector(), retention=retention)  # type: ignore[arg-type]
    assert named in str(info.value)
    assert "\n" not in str(info.value)
