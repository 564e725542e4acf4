"""dawdle.backoff: retry decisions and waits, pure and runtime-agnostic.

Strategies map a retry number to a delay; a `RetryPolicy` decides whether to retry; the
helpers `retry` and `retrying` run calls under a policy on asyncio, Trio or plain threads.
"""

from __future__ import annotations

from dawdle.backoff._budget import RetryBudget as RetryBudget
from dawdle.backoff._hints import RetryAfter as RetryAfter
from dawdle.backoff._policy import MAX_JOB_DELAY as MAX_JOB_DELAY
from dawdle.backoff._policy import Decision as Decision
from dawdle.backoff._policy import ExponentialBackoffStrategy as ExponentialBackoffStrategy
from dawdle.backoff._policy import RetryEvent as RetryEvent
from dawdle.backoff._policy import RetryPolicy as RetryPolicy
from dawdle.backoff._retrying import Attempt as Attempt
from dawdle.backoff._retrying import Retrying as Retrying
from dawdle.backoff._retrying import instant_sleeps as instant_sleeps
from dawdle.backoff._retrying import retry as retry
from dawdle.backoff._retrying import retrying as retrying
from dawdle.backoff._strategies import DEFAULT_MAX_DELAY as DEFAULT_MAX_DELAY
from dawdle.backoff._strategies import Backoff as Backoff
from dawdle.backoff._strategies import Constant as Constant
from dawdle.backoff._strategies import DecorrelatedJitter as DecorrelatedJitter
from dawdle.backoff._strategies import Exponential as Exponential
from dawdle.backoff._strategies import Jitter as Jitter
from dawdle.backoff._strategies import Linear as Linear

__all__ = [
    "DEFAULT_MAX_DELAY",
    "MAX_JOB_DELAY",
    "Attempt",
    "Backoff",
    "Constant",
    "Decision",
    "DecorrelatedJitter",
    "Exponential",
    "ExponentialBackoffStrategy",
    "Jitter",
    "Linear",
    "RetryAfter",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "Retrying",
    "instant_sleeps",
    "retry",
    "retrying",
]
