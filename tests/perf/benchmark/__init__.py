"""The benchmark program behind `nox -s perf`: `python -m tests.perf.benchmark [--quick]`.

It measures, in one run on one database, Procrastinate's own worker and connector on asyncio
next to dawdle's on asyncio and on Trio: defer rates, worked jobs/s by concurrency and queue
depth, defer-to-start latency, an idle worker's CPU and queries, a worker's memory, and
several worker processes on one queue. It prints one table and the issue's targets, and
writes every figure as JSON with charts beside it. See `__main__` for the order of a run.
"""
