"""README, "Tasks take a policy as their retry strategy", as a user writes it."""

from dawdle import App
from dawdle.backoff import Exponential, RetryPolicy

app = App()  # not in the README: the example uses the app defined before it


@app.task(
    retry=RetryPolicy(backoff=Exponential(2.0, jitter="equal", max_delay=600), max_attempts=8)
)
async def sync_account(account_id: int) -> None: ...
