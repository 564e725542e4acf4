"""dawdle: a PostgreSQL task queue for asyncio and Trio, on Procrastinate's schema."""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

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
from dawdle._hooks import Hooks as Hooks
from dawdle._hooks import JobDeferred as JobDeferred
from dawdle._hooks import JobFinished as JobFinished
from dawdle._hooks import JobRetried as JobRetried
from dawdle._hooks import JobsClaimed as JobsClaimed
from dawdle._hooks import JobSnoozed as JobSnoozed
from dawdle._hooks import JobsPruned as JobsPruned
from dawdle._hooks import JobStarted as JobStarted
from dawdle._hooks import LoopRestarted as LoopRestarted
from dawdle._hooks import TraceContext as TraceContext
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
    "Hooks",
    "InMemoryConnector",
    "JobContext",
    "JobDeferred",
    "JobFinished",
    "JobRetried",
    "JobSnoozed",
    "JobStarted",
    "JobTimeout",
    "JobsClaimed",
    "JobsPruned",
    "LoopRestarted",
    "OpenTelemetryHooks",
    "Outcome",
    "PoolTimeout",
    "PsycopgConnector",
    "QueueState",
    "RetryPolicy",
    "SchemaOutdated",
    "SchemaStatus",
    "Snooze",
    "TraceContext",
    "UnsupportedValue",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
]

# The `prometheus` extra's names, imported when first used, so that `import dawdle` never
# needs prometheus_client. QueueStats, the gauges' row (dawdle._queue_stats, which needs no
# extra), is taken from the gauges' module, so it is of the extra as they are.
_PROMETHEUS_NAMES = {
    "PrometheusMetrics": "dawdle._prometheus",
    "QueueGauges": "dawdle._prometheus_queues",
    "QueueStats": "dawdle._prometheus_queues",
    "serve_metrics": "dawdle._prometheus_server",
}
__all__ += list(_PROMETHEUS_NAMES)

if _typing.TYPE_CHECKING:
    from dawdle._prometheus import PrometheusMetrics as PrometheusMetrics
    from dawdle._prometheus_queues import QueueGauges as QueueGauges
    from dawdle._prometheus_server import serve_metrics as serve_metrics
    from dawdle._queue_stats import QueueStats as QueueStats


def __getattr__(name: str) -> _typing.Any:
    """An optional extra's name, imported on first use; its extra named if missing."""
    module = _PROMETHEUS_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'dawdle' has no attribute {name!r}")
    try:
        value = getattr(_importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(
            f"dawdle.{name} needs prometheus_client: pip install 'dawdle[prometheus]'"
        ) from exc
    globals()[name] = value
    return value
