"""README, "The worker", as a user writes it."""

from dawdle import App, RetryPolicy

app = App()  # not in the README: the example uses the app defined before it


@app.task(queue="reports", timeout=30, retry=RetryPolicy(max_attempts=5))
async def build_report(report_id: int) -> None: ...


async def main() -> None:
    async with app.open_async():
        await app.run_worker_async(queues=["reports"], concurrency=20)  # asyncio or Trio
