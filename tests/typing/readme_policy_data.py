"""README, "dawdle.backoff in short": a policy kept in configuration, with an on_retry hook."""

import json
import logging

from dawdle.backoff import Exponential, RetryEvent, RetryPolicy


def log_retry(event: RetryEvent) -> None:  # module-level, so to_dict can name it
    logging.getLogger("app").warning("retry in %.1fs: %s", event.delay, event.reason)


def as_configuration() -> None:
    policy = RetryPolicy(
        backoff=Exponential(0.5, jitter="full", max_delay=60),
        max_attempts=6,
        retry_on=(ConnectionError, TimeoutError),
        retry_after_max=300,  # a server asking for more than 5 minutes: give up
        on_retry=log_retry,
    )
    text = json.dumps(policy.to_dict())  # "retry_on": ["builtins.ConnectionError", ...]
    assert RetryPolicy.from_dict(json.loads(text)) == policy
