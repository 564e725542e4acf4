"""README, "A retry budget for the fleet", as a user writes it."""

from dawdle import App, FleetRetryBudget
from dawdle.backoff import RetryPolicy

app = App()  # not in the README: the example uses the app defined before it


@app.task(
    retry=RetryPolicy(),
    retry_budget=FleetRetryBudget(ratio=0.2, min_per_second=1.0, window=60.0),  # the defaults
)
async def call_partner(order_id: int) -> None: ...
