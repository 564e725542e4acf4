"""dawdle: a PostgreSQL task queue for asyncio and Trio, on Procrastinate's schema."""

from __future__ import annotations

from procrastinate import JobContext as JobContext

from dawdle._app import App as App
from dawdle._app import Blueprint as Blueprint
from dawdle._breaker import Breaker as Breaker
from dawdle._budget_fleet import FleetRetryBudget as FleetRetryBudget
from dawdle._connector.memory import InMemoryConnector as InMemoryConnector
from dawdle._connector.psycopg import PsycopgConnector as PsycopgConnector
from dawdle._errors import ConfigurationError as ConfigurationError
from dawdle._errors import DatabaseUnavailable as DatabaseUnavailable
from dawdle._errors import DawdleError as DawdleError
from dawdle._errors import JobTimeout as JobTimeout
from dawdle._errors import PoolTimeout as PoolTimeout
from dawdle._errors import SchemaOutdated as SchemaOutdated
from dawdle._errors import UnsupportedValue as UnsupportedValue
from dawdle._options import WorkerOptions as WorkerOptions
from dawdle._otel import OpenTelemetryHooks as OpenTelemetryHooks
from dawdle._queues import QueueState as QueueState
from dawdle._schema import SchemaStatus as SchemaStatus
from dawdle._snooze import Snooze as Snooze
from dawdle._worker import Outcome as Outcome
from dawdle._worker import Worker as Worker
from dawdle._worker import WorkerStats as WorkerStats
from dawdle.backoff import ExponentialBackoffStrategy as ExponentialBackoffStrategy
from dawdle.backoff import RetryPolicy as RetryPolicy

__all__ = [
    "App",
    "Blueprint",
    "Breaker",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DawdleError",
    "ExponentialBackoffStrategy",
    "FleetRetryBudget",
    "InMemoryConnector",
    "JobContext",
    "JobTimeout",
    "OpenTelemetryHooks",
    "Outcome",
    "PoolTimeout",
    "PsycopgConnector",
    "QueueState",
    "RetryPolicy",
    "SchemaOutdated",
    "SchemaStatus",
    "Snooze",
    "UnsupportedValue",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
]
