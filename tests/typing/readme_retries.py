"""README, "In-process retries on Trio" and "on asyncio" (each in a function of its own here).

The README's `...` bodies stand for the reader's code: a typed one mypy rejects as empty.
"""

import asyncio

import trio

from dawdle.backoff import DecorrelatedJitter, Exponential, RetryPolicy, retry, retrying


async def download() -> bytes:  # not in the README: what its example calls
    return b""


def on_trio() -> None:
    policy = RetryPolicy(
        backoff=Exponential(0.1, 2.0, jitter="full", max_delay=5.0), max_attempts=5
    )

    async def main() -> None:
        async for attempt in retrying(policy):  # up to 5 runs; waits sleep through anyio
            with attempt:
                report = await download()
        print(len(report))

    trio.run(main)


def on_asyncio() -> None:
    @retry(
        RetryPolicy(backoff=DecorrelatedJitter(0.05, max_delay=2.0), give_up_on=(PermissionError,))
    )
    async def call_service() -> dict[str, object]: ...  # type: ignore[empty-body]

    asyncio.run(call_service())
