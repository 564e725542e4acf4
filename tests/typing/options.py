"""Task and worker options as a user program passes them: each must type-check as it runs."""

from typing import assert_type

import anyio

from dawdle import App, Blueprint, InMemoryConnector, JobContext, PsycopgConnector, WorkerOptions

app = App()
assert_type(app, App[PsycopgConnector])
assert_type(app.connector, PsycopgConnector)

memory_app = App(connector=InMemoryConnector())
assert_type(memory_app.connector, InMemoryConnector)


@app.task(pass_context=True, queue="mail", timeout=2.5)
async def send_once(context: JobContext, to: str) -> int:
    """A side effect keyed on the job, as the README's idempotency advice says."""
    assert context.job.id is not None
    return context.job.id


@app.task
def bare(n: int) -> int:
    return n


blueprint = Blueprint()


@blueprint.task(
    name="report",
    aliases=["old_report"],
    retry=3,
    priority=5,
    lock="l",
    queueing_lock="ql",
    timeout=None,
)
def report(day: str) -> None: ...


async def main() -> None:
    async with app.open_async():
        job_id = await send_once.defer_async(to="ada@example.org")  # no context: the worker's
        assert_type(job_id, int)
        await bare.defer_async(n=1)
        await report.defer_async(day="monday")
        await app.run_worker_async(concurrency=4, wait=False, unknown_tasks="fail")
        await app.run_worker_async(wait=False, stalled_worker_timeout=60, heartbeat_lease=40.0)
        await app.run_worker_async(wait=False, max_recoveries=None)
        options: WorkerOptions = {"queues": ["mail"], "name": None, "delete_jobs": "successful"}
        await app.run_worker_async(**options)


app.run_worker(backend="trio", queues=["mail"], shutdown_graceful_timeout=5.0)
anyio.run(main)
