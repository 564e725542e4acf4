"""dawdle: a PostgreSQL task queue for asyncio and Trio, on Procrastinate's schema."""

from __future__ import annotations

from dawdle._errors import ConfigurationError as ConfigurationError
from dawdle._errors import DawdleError as DawdleError
from dawdle.backoff import ExponentialBackoffStrategy as ExponentialBackoffStrategy
from dawdle.backoff import RetryPolicy as RetryPolicy

__all__ = ["ConfigurationError", "DawdleError", "ExponentialBackoffStrategy", "RetryPolicy"]
