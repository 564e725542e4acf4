"""README, "Pause a queue", as a user writes it."""

from dawdle import App


async def maintenance(app: App) -> None:
    await app.pause_queue_async("mail", reason="smtp provider down")  # False: paused already
    for state in await app.list_queue_states_async():  # dawdle.QueueState
        print(state.name, state.paused, state.paused_at, state.paused_by, state.reason)
    await app.resume_queue_async("mail")  # False: it was not paused
