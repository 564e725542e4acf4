"""The tasks the browser test's worker runs (on the database of $DAWDLE_DSN)."""

from __future__ import annotations

from procrastinate import JobContext

from dawdle import App

app = App()


@app.task(name="noop", queue="mail")
async def noop() -> None:
    """Succeed at once."""


@app.task(name="fail_once", queue="billing", pass_context=True)
async def fail_once(context: JobContext, card: str, amount: int) -> None:
    """Fail on the first run; succeed once retried (a retry spends an attempt)."""
    assert context.job is not None
    if context.job.attempts == 0:
        raise RuntimeError(f"card {card} declined for {amount} (first run)")
