"""README, "A circuit breaker per task", as a user writes it."""

from dawdle import App, Breaker
from dawdle.backoff import RetryPolicy

app = App()  # not in the README: the example uses the app defined before it


@app.task(
    retry=RetryPolicy(),
    breaker=Breaker(
        failure_ratio=0.5,  # open when half the calls fail...
        window=60.0,  # ...over the last minute (exponentially weighted)...
        min_calls=20,  # ...with at least 20 calls counted
        open_for=30.0,  # closed to claims for 30 s, doubled on each trip in a row...
        max_open_for=600.0,  # ...up to 10 minutes
        half_open_probes=1,  # then this many jobs run as probes
    ),  # the defaults
)
async def call_partner(order_id: int) -> None: ...
