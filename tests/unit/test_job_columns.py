"""`JobColumns` and `JobRow`: a batch into the set-based defer's arrays, one job into scalars."""

from __future__ import annotations

import json

import pytest
from procrastinate.types import JobToDefer
from psycopg.types.json import Jsonb

from dawdle import UnsupportedValue
from dawdle._connector._params import JobColumns, JobLimits, JobRow, query_params


def _job(n: int, **fields: object) -> JobToDefer:
    values: dict[str, object] = {
        "queue_name": "default",
        "task_name": "task",
        "priority": 0,
        "lock": None,
        "queueing_lock": None,
        "args": {"n": n},
        "scheduled_at": None,
    }
    return JobToDefer(**{**values, **fields})  # type: ignore[arg-type]


def test_a_batch_becomes_one_array_per_column_in_the_jobs_order() -> None:
    """Each `job_*` array lists the jobs' values in order; arguments go as jsonb."""
    jobs = [_job(1, lock="a", priority=2), _job(2, queueing_lock="q")]
    params = query_params({"query_id": 7, "jobs": JobColumns(jobs)}, JobLimits("test", None), None)
    assert params["query_id"] == 7
    assert "jobs" not in params
    assert params["job_locks"] == ["a", None]
    assert params["job_queueing_locks"] == [None, "q"]
    assert params["job_priorities"] == [2, 0]
    assert params["job_task_names"] == ["task", "task"]
    assert all(isinstance(arg, Jsonb) for arg in params["job_args"])
    assert [arg.obj for arg in params["job_args"]] == [{"n": 1}, {"n": 2}]


def test_a_batch_with_one_bad_job_is_refused_whole() -> None:
    """A job over the payload limit, anywhere in the batch: UnsupportedValue with its size."""
    big = {"blob": "x" * 200}
    jobs = [_job(1), _job(2, args=big)]
    with pytest.raises(UnsupportedValue, match="exceeds max_payload_bytes=100"):
        query_params({"jobs": JobColumns(jobs)}, JobLimits("test", 100), json.dumps)
    with pytest.raises(UnsupportedValue, match="task_name"):
        query_params(
            {"jobs": JobColumns([_job(1), _job(2, task_name="t" * 200)])},
            JobLimits("test", None),
            None,
        )


def test_one_job_becomes_one_value_per_column() -> None:
    """A `JobRow` gives the single-row defer's `job_*` scalars; its argument goes as jsonb."""
    job = _job(3, lock="a", priority=2, queue_name="q")
    params = query_params({"query_id": 7, "jobs": JobRow(job)}, JobLimits("test", None), None)
    args = params.pop("job_args")
    assert params == {
        "query_id": 7,
        "job_queue_name": "q",
        "job_task_name": "task",
        "job_priority": 2,
        "job_lock": "a",
        "job_queueing_lock": None,
        "job_scheduled_at": None,
    }
    assert isinstance(args, Jsonb)
    assert args.obj == {"n": 3}


def test_one_bad_job_is_refused_before_it_is_sent() -> None:
    """The batch's checks: the payload limit and the columns' sizes."""
    with pytest.raises(UnsupportedValue, match="exceeds max_payload_bytes=100"):
        query_params(
            {"jobs": JobRow(_job(1, args={"blob": "x" * 200}))}, JobLimits("test", 100), json.dumps
        )
    with pytest.raises(UnsupportedValue, match="queue_name"):
        query_params({"jobs": JobRow(_job(1, queue_name="q" * 200))}, JobLimits("test", None), None)
