"""The worker, as a few parts that share one `WorkerState` (see docs/architecture.md).

`worker` runs the parts; `claimer` takes jobs, `runners` run them, `outcomes` decides what
became of each, `writer` records it, `housekeeping` keeps the worker registered and
recovers what others left, and `store` is all the SQL they send.
"""

from __future__ import annotations

from dawdle._worker.outcomes import Outcome as Outcome
from dawdle._worker.state import WorkerStats as WorkerStats
from dawdle._worker.worker import Worker as Worker

__all__ = ["Outcome", "Worker", "WorkerStats"]
