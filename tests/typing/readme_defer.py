"""README, "Defer jobs, on Trio or asyncio" and its transaction idiom, as a user writes them."""

import anyio

from dawdle import App, ExponentialBackoffStrategy, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo="postgresql://app@db/jobs", max_size=10))


@app.task(queue="mail", retry=ExponentialBackoffStrategy(max_attempts=3, base_delay=1.0))
async def send_email(to: str) -> None: ...


async def main() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()  # idempotent
        await send_email.defer_async(to="ada@example.org")
        await send_email.batch_defer_async({"to": "a@example.org"}, {"to": "b@example.org"})


anyio.run(main, backend="trio")  # or backend="asyncio", or trio.run(main), asyncio.run(main())


# Not in the README: the function around its "Defer inside your own transaction" block.
async def upgrade(account_id: int, email: str) -> None:
    async with app.connector.connection() as conn, conn.transaction():
        await conn.execute("UPDATE accounts SET plan = 'pro' WHERE id = %s", (account_id,))
        await send_email.configure(connection=conn).defer_async(to=email)
