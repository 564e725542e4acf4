"""Query parameters as Procrastinate sends them: dicts as jsonb, checked for what jsonb refuses.

A job is checked before anything is sent: its argument's JSON is encoded once, measured
against `max_payload_bytes` and sent as encoded; its queue and task names and locks against
their columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from procrastinate.types import JobToDefer
from psycopg.types.json import Jsonb

from dawdle._errors import ConfigurationError, UnsupportedValue
from dawdle._validate import integer

JsonDumps = Callable[[Any], str | bytes]

# A job's argument should name the data it works on, not carry it: 1 MiB (SQS's and Cloud
# Tasks' limit) is far above a typical job's few hundred bytes, and bounds what a worker holds
# per running job (the decoded Python objects take several times the JSON's size).
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
# jsonb's own limit (255 MB): the server refuses more, after receiving all of it.
JSONB_MAX_BYTES: Final = 0x0FFFFFFF
# Procrastinate's columns: queue_name and task_name are character varying(128).
NAME_MAX_CHARS: Final = 128
# lock and queueing_lock are text, but each is in btree indexes, whose entries hold at most
# 2,704 bytes (less once compressed): a longer lock is refused by the server, after the whole
# job was sent, with an error about an index. 1 KiB is far more than a key needs.
LOCK_MAX_BYTES: Final = 1024

_CONTAINERS = (dict, list, tuple)


class JobLimits:
    """What a connector accepts in one job: `max_payload_bytes` of JSON, names that fit."""

    def __init__(self, owner: str, max_payload_bytes: int | None) -> None:
        limit = JSONB_MAX_BYTES if max_payload_bytes is None else max_payload_bytes
        integer(f"{owner}: max_payload_bytes", limit, at_least=1)
        if limit > JSONB_MAX_BYTES:
            raise ConfigurationError(
                f"{owner}: max_payload_bytes={limit:,} exceeds jsonb's limit of "
                f"{JSONB_MAX_BYTES:,} bytes (None means that limit)"
            )
        self.max_payload_bytes = limit

    def check_job(self, job: JobToDefer) -> None:
        """Refuse a queue or task name longer than its column, or a lock its index cannot hold."""
        for field, name in (("queue_name", job.queue_name), ("task_name", job.task_name)):
            if isinstance(name, str) and len(name) > NAME_MAX_CHARS:
                raise UnsupportedValue(
                    f"{field} {name[:40]!r}... is {len(name):,} characters; Procrastinate's "
                    f"column holds at most {NAME_MAX_CHARS}"
                )
        for field, lock in (("lock", job.lock), ("queueing_lock", job.queueing_lock)):
            if isinstance(lock, str) and len(lock) * 4 > LOCK_MAX_BYTES:
                size = len(lock.encode())
                if size > LOCK_MAX_BYTES:
                    raise UnsupportedValue(
                        f"{field} {lock[:40]!r}... is {size:,} bytes; at most "
                        f"{LOCK_MAX_BYTES:,} fit in Procrastinate's index"
                    )

    def encode_args(self, args: dict[str, Any], dumps: JsonDumps) -> bytes:
        """The argument's JSON, encoded once, or UnsupportedValue naming its size and the limit.

        A lower bound of the size (every character of a string is at least one byte) refuses
        a huge argument before any copy of it is made.
        """
        limit = self.max_payload_bytes
        at_least = _check_jsonb(args, "job argument")
        if at_least > limit:
            raise UnsupportedValue(
                f"job argument of at least {at_least:,} bytes of JSON exceeds "
                f"max_payload_bytes={limit:,}"
            )
        encoded = dumps(args)
        data = encoded.encode() if isinstance(encoded, str) else encoded
        if len(data) > limit:
            raise UnsupportedValue(
                f"job argument of {len(data):,} bytes of JSON exceeds max_payload_bytes={limit:,}"
            )
        return data


def _check_jsonb(value: Any, path: str) -> int:
    """Refuse what JSON or PostgreSQL's jsonb cannot hold, naming where it is.

    Returns a lower bound of the value's size as JSON, in bytes.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsupportedValue(f"{path} = {value!r}: NaN and Infinity are not JSON")
    if isinstance(value, str):
        if "\x00" in value:
            raise UnsupportedValue(f"{path} = {value!r:.60}: jsonb cannot hold \\u0000 (NUL)")
        return len(value) + 2  # its quotes, and at least a byte per character
    if isinstance(value, dict):
        size = 2  # the braces; separators are not counted (a custom dumps may leave them out)
        for key, item in value.items():
            size += _check_jsonb(key, f"{path} key") + _check_jsonb(item, f"{path}[{key!r}]")
        return size
    if isinstance(value, list | tuple):
        size = 2
        for index, item in enumerate(value):
            size += _check_jsonb(item, f"{path}[{index}]")
        return size
    return 1  # a number, true, false or null: at least a byte


@dataclass(frozen=True)
class JobColumns:
    """A batch of jobs to defer, sent as one array per column (`_sql.DEFER_JOBS`).

    `query_params` checks each job and expands it into the statement's `job_*` parameters.
    """

    jobs: Sequence[JobToDefer]


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job to defer, sent as scalar parameters (`_sql.DEFER_JOB`).

    `query_params` checks it and expands it into the statement's `job_*` parameters, as
    `JobColumns` does a batch's arrays.
    """

    job: JobToDefer


class _Encoded:
    """A `dumps` for psycopg's Jsonb that hands over JSON encoded already, once.

    The encoded value is let go when psycopg takes it, so that the query holds no extra copy
    of a big argument; a second dump (the query sent again on another connection after the
    server closed the first) encodes it again.
    """

    __slots__ = ("_data", "_dumps")

    def __init__(self, data: bytes, dumps: JsonDumps) -> None:
        self._data: bytes | None = data
        self._dumps = dumps

    def __call__(self, value: Any) -> str | bytes:
        data, self._data = self._data, None
        return self._dumps(value) if data is None else data


class _Params:
    """Turns one query's arguments into psycopg parameters under a connector's limits."""

    def __init__(self, limits: JobLimits, dumps: JsonDumps) -> None:
        self._limits = limits
        self._dumps = dumps

    def convert(self, value: Any) -> Any:
        if isinstance(value, dict):
            encoded = self._limits.encode_args(value, self._dumps)
            return Jsonb(value, dumps=_Encoded(encoded, self._dumps))
        if isinstance(value, list):
            # Arrays of plain values (the worker's batches of ids, statuses...) go as they are.
            if not any(isinstance(item, _CONTAINERS) for item in value):
                return value
            return [self.convert(item) for item in value]
        if isinstance(value, JobToDefer):
            self._limits.check_job(value)
        if isinstance(value, tuple):  # NamedTuples too (JobToDefer): sent as a plain record
            return tuple(self.convert(item) for item in value)
        return value

    def row(self, row: JobRow) -> dict[str, Any]:
        """The job's `job_*` values, checked and its argument encoded once."""
        job = row.job
        self._limits.check_job(job)
        return {
            "job_queue_name": job.queue_name,
            "job_task_name": job.task_name,
            "job_priority": job.priority,
            "job_lock": job.lock,
            "job_queueing_lock": job.queueing_lock,
            "job_args": self.convert(job.args),
            "job_scheduled_at": job.scheduled_at,
        }

    def columns(self, batch: JobColumns) -> dict[str, Any]:
        """The batch's `job_*` arrays, each job checked and its argument encoded once."""
        jobs = batch.jobs
        for job in jobs:
            self._limits.check_job(job)
        return {
            "job_queue_names": [job.queue_name for job in jobs],
            "job_task_names": [job.task_name for job in jobs],
            "job_priorities": [job.priority for job in jobs],
            "job_locks": [job.lock for job in jobs],
            "job_queueing_locks": [job.queueing_lock for job in jobs],
            "job_args": [self.convert(job.args) for job in jobs],
            "job_scheduled_ats": [job.scheduled_at for job in jobs],
        }


def query_params(
    arguments: dict[str, Any], limits: JobLimits, dumps: JsonDumps | None
) -> dict[str, Any]:
    """Procrastinate's arguments with dicts sent as jsonb, as its own connector does.

    A `JobColumns` argument becomes the arrays of the set-based defer (`columns`), a
    `JobRow` the values of the single-row one (`row`).
    """
    params = _Params(limits, json.dumps if dumps is None else dumps)
    converted: dict[str, Any] = {}
    for key, value in arguments.items():
        if isinstance(value, JobRow):
            converted.update(params.row(value))
        elif isinstance(value, JobColumns):
            converted.update(params.columns(value))
        else:
            converted[key] = params.convert(value)
    return converted
