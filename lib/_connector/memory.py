"""An in-memory connector for fast unit tests, on asyncio and Trio."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio.from_thread
import anyio.lowlevel
from procrastinate import connector as procrastinate_connector
from procrastinate import jobs, schema, testing

from dawdle._schema import CHECK_SCHEMA_QUERY, expected_functions


class InMemoryConnector(testing.InMemoryConnector):
    """Procrastinate's in-memory connector with its asyncio ties cut.

    Same query semantics and inspection API (`connector.jobs`, `reset()`); notifications
    reach the event loop that opened it, whichever runtime that is and whichever thread
    defers. Never a substitute for a real database in durability tests.
    """

    def __init__(self) -> None:
        super().__init__()
        # SchemaManager escapes % before sending the schema; without this key the lookup of
        # the escaped text fails with a KeyError in Procrastinate's own in-memory connector.
        escaped = schema.SchemaManager.get_schema().replace("%", "%%")
        self.reverse_queries[escaped] = "apply_schema"
        self.reverse_queries[CHECK_SCHEMA_QUERY] = "check_schema"
        self._token: anyio.lowlevel.EventLoopToken | None = None

    async def open_async(self, pool: procrastinate_connector.Pool | None = None) -> None:
        """Remember the running event loop so that other threads can notify it."""
        self._token = anyio.lowlevel.current_token()
        self._loop_thread_id = threading.get_ident()
        self.states.append("open_async")

    async def _notify(self, queue_name: str, notification: jobs.Notification) -> None:
        if not self.on_notification:
            return
        destinations = {"procrastinate_any_queue_v1", f"procrastinate_queue_v1#{queue_name}"}
        payload = json.dumps(notification)
        for channel in sorted(destinations.intersection(self.notify_channels)):
            if self._token is None or threading.get_ident() == self._loop_thread_id:
                await self.on_notification(channel=channel, payload=payload)
            else:
                # Deferred from another thread (a sync task): hand over to the opening loop.
                anyio.from_thread.run(self._deliver, channel, payload, token=self._token)

    async def _deliver(self, channel: str, payload: str) -> None:
        assert self.on_notification is not None  # noqa: S101 (checked by _notify)
        await self.on_notification(channel=channel, payload=payload)

    async def check_schema_one(self) -> dict[str, Any]:
        """The in-memory database always has the current schema."""
        return {"present": True, "functions": sorted(expected_functions())}

    async def close_async(self) -> None:
        """Forget the event loop; the jobs stay inspectable."""
        self._token = None
        self.states.append("closed_async")
