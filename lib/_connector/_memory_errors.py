"""`dawdle_job_errors` in memory: the rows the outcome statement's `errors` CTE inserts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

# The outcome statement's arguments that carry the batch's errors.
ERROR_KEYS: Final = frozenset(
    {
        "error_ids",
        "error_attempts",
        "error_times",
        "error_types",
        "error_messages",
        "error_tracebacks",
    }
)


class JobErrors:
    """Each stored error's row by (job id, attempt), as PostgreSQL's table holds them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int], dict[str, Any]] = {}

    def planned(
        self, arguments: Mapping[str, Any], updated: Callable[[int, str], bool]
    ) -> list[dict[str, Any]]:
        """The rows to insert: those of jobs the statement updates (`updated(id, status)`).

        Read before the outcomes are written, as the CTE sees the jobs as they were.
        """
        statuses = dict(zip(arguments["ids"], arguments["statuses"], strict=True))
        return [
            {
                "job_id": job_id,
                "attempt": attempt,
                "failed_at": failed_at,
                "exception_type": kind,
                "message": message,
                "traceback": text,
            }
            for job_id, attempt, failed_at, kind, message, text in zip(
                arguments["error_ids"],
                arguments["error_attempts"],
                arguments["error_times"],
                arguments["error_types"],
                arguments["error_messages"],
                arguments["error_tracebacks"],
                strict=True,
            )
            if updated(job_id, statuses[job_id])
        ]

    def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert `rows`; one whose (job id, attempt) is there is skipped (DO NOTHING)."""
        for row in rows:
            self.rows.setdefault((row["job_id"], row["attempt"]), row)

    def of(self, job_id: int, jobs: Mapping[int, Any]) -> list[dict[str, Any]]:
        """The job's rows by attempt; none once the job is gone (the foreign key's cascade)."""
        if job_id not in jobs:
            return []
        return [row for (owner, _), row in sorted(self.rows.items()) if owner == job_id]
