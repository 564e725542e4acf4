"""README, "Job retries, deadlines and snoozes", as a user writes it."""

from dawdle import App, Snooze
from dawdle.backoff import Exponential, RetryEvent, RetryPolicy

app = App()  # not in the README: the example uses the app defined before it


class Metrics:  # not in the README: the user's metrics client
    def increment(self, name: str, *, tags: dict[str, object]) -> None: ...


metrics = Metrics()


async def partner_ready() -> bool:  # not in the README: the user's own code
    return True


async def push_changes(account_id: int) -> None: ...  # not in the README


def report(event: RetryEvent) -> None:
    metrics.increment("retries", tags={"job": event.job_id, "attempt": event.attempt})


@app.task(
    retry=RetryPolicy(
        backoff=Exponential(1.0, 2.0, jitter="full", max_delay=300),
        max_attempts=None,  # no limit on runs...
        deadline=3600,  # ...but no retry starts more than an hour after the first run
        on_retry=report,
    )
)
async def sync_account(account_id: int) -> None:
    if not await partner_ready():
        raise Snooze(30)  # run again in 30 s; spends no attempt
    await push_changes(account_id)
