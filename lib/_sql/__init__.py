"""dawdle's own queries on Procrastinate's tables and its own, one module per concern."""

from __future__ import annotations

from dawdle._sql.admin import FINISHED_RECENTLY as FINISHED_RECENTLY
from dawdle._sql.admin import GET_JOB as GET_JOB
from dawdle._sql.admin import JOB_ERRORS as JOB_ERRORS
from dawdle._sql.admin import JOB_EVENTS as JOB_EVENTS
from dawdle._sql.admin import LIST_JOBS as LIST_JOBS
from dawdle._sql.admin import LIST_WORKERS as LIST_WORKERS
from dawdle._sql.admin import RETRY_JOBS as RETRY_JOBS
from dawdle._sql.claims import CLAIM_JOBS_TIMED as CLAIM_JOBS_TIMED
from dawdle._sql.claims import CLAIM_JOBS_TIMED_IGNORING_PAUSES as CLAIM_JOBS_TIMED_IGNORING_PAUSES
from dawdle._sql.claims import CLAIM_JOBS_TIMED_UNLESS_PROBES as CLAIM_JOBS_TIMED_UNLESS_PROBES
from dawdle._sql.claims import CLAIM_JOBS_TIMED_WITH_BREAKERS as CLAIM_JOBS_TIMED_WITH_BREAKERS
from dawdle._sql.claims import FETCH_JOBS as FETCH_JOBS
from dawdle._sql.claims import FETCH_JOBS_IGNORING_PAUSES as FETCH_JOBS_IGNORING_PAUSES
from dawdle._sql.claims import FETCH_JOBS_UNLESS_PROBES as FETCH_JOBS_UNLESS_PROBES
from dawdle._sql.claims import FETCH_JOBS_WITH_BREAKERS as FETCH_JOBS_WITH_BREAKERS
from dawdle._sql.defers import DEFER_JOBS as DEFER_JOBS
from dawdle._sql.defers import DEFER_JOBS_TRACED as DEFER_JOBS_TRACED
from dawdle._sql.outcomes import ADD_BREAKER as ADD_BREAKER
from dawdle._sql.outcomes import ADD_RETRY_BUDGETS as ADD_RETRY_BUDGETS
from dawdle._sql.outcomes import RECORD_OUTCOMES as RECORD_OUTCOMES
from dawdle._sql.outcomes import RECORD_OUTCOMES_BUDGETED as RECORD_OUTCOMES_BUDGETED
from dawdle._sql.outcomes import (
    RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS as RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS,
)
from dawdle._sql.outcomes import (
    RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS_AND_ERRORS as RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS_AND_ERRORS,  # noqa: E501
)
from dawdle._sql.outcomes import (
    RECORD_OUTCOMES_BUDGETED_WITH_ERRORS as RECORD_OUTCOMES_BUDGETED_WITH_ERRORS,
)
from dawdle._sql.outcomes import RECORD_OUTCOMES_WITH_BREAKERS as RECORD_OUTCOMES_WITH_BREAKERS
from dawdle._sql.outcomes import (
    RECORD_OUTCOMES_WITH_BREAKERS_AND_ERRORS as RECORD_OUTCOMES_WITH_BREAKERS_AND_ERRORS,
)
from dawdle._sql.outcomes import RECORD_OUTCOMES_WITH_ERRORS as RECORD_OUTCOMES_WITH_ERRORS
from dawdle._sql.queues import ACTIVE_QUEUES as ACTIVE_QUEUES
from dawdle._sql.queues import FAILED_QUEUES as FAILED_QUEUES
from dawdle._sql.retention import PRUNE_JOBS as PRUNE_JOBS
from dawdle._sql.retention import PRUNE_LOCK_KEY as PRUNE_LOCK_KEY
from dawdle._sql.workers import HEARTBEAT as HEARTBEAT
from dawdle._sql.workers import PUBLISH_TASKS as PUBLISH_TASKS
from dawdle._sql.workers import RECLAIM_JOBS as RECLAIM_JOBS
from dawdle._sql.workers import RECOVER_STALLED_JOBS as RECOVER_STALLED_JOBS
