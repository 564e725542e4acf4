"""README, "Hooks", as a user writes it."""

import anyio
from procrastinate import jobs

from dawdle import App, Hooks, JobContext, JobFinished, JobRetried, JobStarted, RetryPolicy
from dawdle.backoff import Constant


def named(job: jobs.Job) -> str:
    return f"{job.task_name}[{job.id}]"


class Printer(Hooks):
    """Prints each run: override only the events you need."""

    def job_started(self, event: JobStarted) -> None:
        print(f"started  {named(event.job)} attempt {event.attempt}")

    def job_retried(self, event: JobRetried) -> None:
        print(f"retried  {named(event.job)} in {event.delay:g} s: {event.reason}")

    def job_finished(self, event: JobFinished) -> None:
        print(f"finished {named(event.job)} {event.outcome} ({event.duration:.2f} s)")


app = App(hooks=[Printer()])


@app.task(pass_context=True, retry=RetryPolicy(backoff=Constant(0.5), max_attempts=3))
async def fetch(context: JobContext, url: str) -> None:
    await anyio.sleep(0.1)
    if context.job.attempts == 0:
        raise ConnectionError(f"{url} unreachable")


async def main() -> None:
    async with app.open_async():
        await fetch.defer_async(url="https://example.org")
        with anyio.move_on_after(1):  # cancelling its scope stops the worker gracefully
            await app.run_worker_async()


anyio.run(main, backend="trio")
