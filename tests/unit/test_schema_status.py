"""Reading the schema check's result: present or not, which version, what is missing."""

from __future__ import annotations

import pytest

from dawdle import SchemaOutdated
from dawdle._dawdle_schema import DAWDLE_TABLES
from dawdle._schema import expected_functions, refuse_outdated, schema_status

ALL_TABLES = list(DAWDLE_TABLES)
SCHEMA_4 = ("dawdle_job_errors", "dawdle_budget_pushed", "dawdle_job_traces")


def test_absent_schema() -> None:
    """No procrastinate_jobs table: not present, no version, everything missing."""
    status = schema_status(present=False, functions=[], tables=[])
    assert not status.present
    assert status.version is None
    assert not status.current
    assert "procrastinate_fetch_job_v2" in status.missing
    assert status.dawdle_missing == (
        "dawdle_worker_tasks",
        "dawdle_queue_pauses",
        "dawdle_retry_budgets",
        "dawdle_breakers",
        *SCHEMA_4,
    )


def test_current_schema() -> None:
    """Every function of the installed Procrastinate is there: current, at its newest version."""
    status = schema_status(present=True, functions=sorted(expected_functions()), tables=ALL_TABLES)
    assert status.current
    assert status.complete
    assert status.missing == ()
    assert status.dawdle_missing == ()
    assert status.version == "3.4.0"  # the newest function, retry_job_v2, came with 3.4.0


def test_older_schema_names_what_it_lacks() -> None:
    """A 3.0-era schema lacks retry_job_v2 and is reported as needing migrations."""
    functions = sorted(expected_functions() - {"procrastinate_retry_job_v2"})
    status = schema_status(present=True, functions=functions, tables=ALL_TABLES)
    assert not status.current
    assert status.missing == ("procrastinate_retry_job_v2",)
    assert status.version is not None
    assert status.version < "3.4.0"


def test_refuse_outdated_names_what_a_present_schema_lacks() -> None:
    """A present schema without retry_job_v2 is refused, naming the function and the fix."""
    functions = sorted(expected_functions() - {"procrastinate_retry_job_v2"})
    with pytest.raises(SchemaOutdated, match="without procrastinate_retry_job_v2: apply"):
        refuse_outdated(schema_status(present=True, functions=functions, tables=ALL_TABLES))


def test_refuse_outdated_passes_a_current_or_absent_schema() -> None:
    """Only an outdated schema is refused: an absent one is for the caller to create or report."""
    refuse_outdated(
        schema_status(present=True, functions=sorted(expected_functions()), tables=ALL_TABLES)
    )
    refuse_outdated(schema_status(present=False, functions=[], tables=[]))


def test_missing_dawdle_tables_leave_procrastinate_schema_current() -> None:
    """Without dawdle's tables the schema is current (workers run) but not complete."""
    status = schema_status(
        present=True, functions=sorted(expected_functions()), tables=["dawdle_unrelated"]
    )
    assert status.current
    assert not status.complete
    assert status.dawdle_missing == (
        "dawdle_worker_tasks",
        "dawdle_queue_pauses",
        "dawdle_retry_budgets",
        "dawdle_breakers",
        *SCHEMA_4,
    )
    refuse_outdated(status)


def test_schema_of_dawdle_version_1_misses_the_later_tables() -> None:
    """A database applied by dawdle schema 1 has dawdle_worker_tasks only: later ones missing."""
    status = schema_status(
        present=True, functions=sorted(expected_functions()), tables=["dawdle_worker_tasks"]
    )
    assert status.current
    assert not status.complete
    assert status.dawdle_missing == (
        "dawdle_queue_pauses",
        "dawdle_retry_budgets",
        "dawdle_breakers",
        *SCHEMA_4,
    )


def test_schema_of_dawdle_version_2_misses_the_tables_of_versions_3_and_4() -> None:
    """A database applied by dawdle schema 2 lacks schema 3's and 4's tables alone."""
    status = schema_status(
        present=True,
        functions=sorted(expected_functions()),
        tables=["dawdle_worker_tasks", "dawdle_queue_pauses"],
    )
    assert status.current
    assert not status.complete
    assert status.dawdle_missing == ("dawdle_retry_budgets", "dawdle_breakers", *SCHEMA_4)


def test_schema_of_dawdle_version_3_misses_the_errors_and_pushed_retries_tables() -> None:
    """A database applied by dawdle schema 3 lacks schema 4's tables alone."""
    status = schema_status(
        present=True,
        functions=sorted(expected_functions()),
        tables=list(DAWDLE_TABLES[:4]),
    )
    assert not status.complete
    assert status.dawdle_missing == SCHEMA_4
