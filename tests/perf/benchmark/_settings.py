"""How much of each measurement a run makes: the full run, and the quick one (under 2 minutes).

The full run is meant to fit in 20 minutes on 2 cores: 3 rounds of most measurements, 2 of
the idle worker (whose window must be long enough to see its 5 s polls and 10 s heartbeats),
1 of memory (a peak, in one long drain), and depth 1,000,000 (its fill alone takes ~20 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Settings:
    """The sizes, windows and round counts of one run."""

    mode: Literal["quick", "full"]
    rounds: int  # of every in-process measurement; each round runs every configuration once
    # Defer rates.
    round_trips: int  # sequential SELECT 1
    sequential_defers: int
    defer_tasks: int  # concurrent tasks deferring one job at a time
    defers_per_task: int
    batches: int  # batch_defer_async calls of batch_size jobs
    batch_size: int
    # Worked jobs: the queue drained at each concurrency, and jobs that sleep.
    drain_depth: int
    concurrencies: tuple[int, ...]
    drain_window: float  # seconds a drain may take before its worker is stopped
    sleep_jobs: int
    sleep_concurrency: int
    # Defer-to-start latency on an idle worker woken by LISTEN/NOTIFY.
    latency_jobs: int
    latency_spacing: float  # seconds slept after each defer
    # Queue depth: deep queues worked for a window, then topped back up.
    depth_concurrency: int
    deep_depths: tuple[int, ...]
    skipped_depths: tuple[int, ...]
    deep_window: float
    # An idle worker in a process of its own.
    idle_rounds: int
    idle_seconds: float
    # Peak RSS of a process that works `memory_jobs` (fewer for a configuration whose
    # measured rate would take longer than `memory_budget` seconds).
    memory_jobs: int
    memory_budget: float
    # Several worker processes on one deep queue.
    process_rounds: int
    process_counts: tuple[int, ...]
    process_depth: int
    process_window: float
    # What a retry decision costs.
    retry_decisions: int
    # A producer and a worker in one event loop: 1 ms jobs, the queue held this deep.
    inprocess_concurrencies: tuple[int, ...] = (10, 100)
    inprocess_depth: int = 4_000
    inprocess_window: float = 3.0
    # The features' cost: no-op drains of this many jobs with each feature and without it.
    features_depth: int = 2_000
    features_concurrency: int = 10
    # Seconds a worker is given to start (LISTEN in place, first poll done) before measuring.
    settle: float = 1.0
    concurrency: int = 10  # of the latency, memory and process measurements


QUICK = Settings(
    mode="quick",
    rounds=1,
    round_trips=500,
    sequential_defers=200,
    defer_tasks=10,
    defers_per_task=100,
    batches=5,
    batch_size=1_000,
    drain_depth=1_000,
    concurrencies=(1, 10, 100),
    drain_window=15.0,
    sleep_jobs=2_000,
    sleep_concurrency=100,
    latency_jobs=100,
    latency_spacing=0.01,
    depth_concurrency=10,
    deep_depths=(100_000,),
    skipped_depths=(1_000_000,),
    deep_window=2.0,
    idle_rounds=1,
    idle_seconds=6.0,
    memory_jobs=10_000,
    memory_budget=5.0,
    process_rounds=1,
    process_counts=(1, 2, 4),
    process_depth=100_000,
    process_window=2.0,
    retry_decisions=20_000,
    settle=0.5,
)

FULL = Settings(
    mode="full",
    rounds=3,
    round_trips=1_500,
    sequential_defers=500,
    defer_tasks=10,
    defers_per_task=300,
    batches=5,
    batch_size=1_000,
    drain_depth=1_000,
    concurrencies=(1, 10, 100),
    drain_window=30.0,
    sleep_jobs=5_000,
    sleep_concurrency=100,
    latency_jobs=300,
    latency_spacing=0.015,
    depth_concurrency=10,
    deep_depths=(100_000, 1_000_000),
    skipped_depths=(),
    deep_window=5.0,
    idle_rounds=2,
    idle_seconds=20.0,
    memory_jobs=100_000,
    memory_budget=180.0,
    process_rounds=3,
    process_counts=(1, 2, 4),
    process_depth=100_000,
    process_window=5.0,
    retry_decisions=50_000,
    inprocess_window=5.0,
    features_depth=5_000,
)
