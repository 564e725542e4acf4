"""dawdle.prometheus: a worker's metrics for Prometheus (`pip install 'dawdle[prometheus]'`).

    metrics = PrometheusMetrics()
    async with serve_metrics(app.connector, metrics, port=9100):
        await app.run_worker_async(hooks=[metrics])

Importing this module without prometheus_client raises ImportError naming the extra.
"""

from __future__ import annotations

from dawdle._prometheus import PrometheusMetrics
from dawdle._prometheus_queues import QueueGauges, QueueStats
from dawdle._prometheus_server import serve_metrics

__all__ = ["PrometheusMetrics", "QueueGauges", "QueueStats", "serve_metrics"]
