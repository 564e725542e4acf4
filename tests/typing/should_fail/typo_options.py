"""Typo'd options that mypy must reject: `--warn-unused-ignores` fails the run if one passes."""

from dawdle import App

app = App()


@app.task(queu="mail")  # type: ignore[call-overload, untyped-decorator]
async def misspelt_queue() -> None: ...


@app.task(queue="mail", timout=3)  # type: ignore[call-overload, untyped-decorator]
async def misspelt_timeout() -> None: ...


@app.task(pass_context=True)  # type: ignore[arg-type]
async def needs_context(to: str) -> None: ...


async def main() -> None:
    await app.run_worker_async(concurency=2)  # type: ignore[call-arg]
    app.run_worker(backend="trio", wiat=False)  # type: ignore[call-arg]
    await app.run_worker_async(unknown_tasks="skip")  # type: ignore[arg-type]
    await app.run_worker_async(heartbeat_lease="20")  # type: ignore[arg-type]
    await app.run_worker_async(heartbeat_leese=20)  # type: ignore[call-arg]
