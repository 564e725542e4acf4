"""Which exceptions a policy retries: `retry_on` and `give_up_on`, exception groups included."""

from __future__ import annotations

from typing import TypeAlias

from dawdle._errors import ConfigurationError

ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]


def exception_types(where: str, value: object) -> tuple[type[BaseException], ...]:
    """`value`, one exception class or a tuple of them, as a tuple; `where` names it."""
    types = value if isinstance(value, tuple) else (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(
                f"{where} must be exception classes, got {item!r} in {value!r}"
            )
    return types


def nodes(exc: BaseException) -> list[BaseException]:
    """`exc` and, if it is a group, every group and leaf nested in it."""
    if isinstance(exc, BaseExceptionGroup):
        return [exc, *(node for inner in exc.exceptions for node in nodes(inner))]
    return [exc]


def matches(node: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    """A leaf matches any of `types`; a group only a group class named in `types` itself."""
    if isinstance(node, BaseExceptionGroup):
        return any(
            issubclass(kind, BaseExceptionGroup) and isinstance(node, kind) for kind in types
        )
    return isinstance(node, types)


def retryable(
    exc: BaseException, retry_on: tuple[type[BaseException], ...]
) -> BaseException | None:
    """None if `exc` is covered by `retry_on`, else the first leaf or group that is not.

    A group is covered if a group class in `retry_on` matches it, or else if everything in
    it is covered.
    """
    if matches(exc, retry_on):
        return None
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            refused = retryable(inner, retry_on)
            if refused is not None:
                return refused
        return None
    return exc


def why_refused(
    exc: BaseException,
    retry_on: tuple[type[BaseException], ...],
    give_up_on: tuple[type[BaseException], ...],
) -> str | None:
    """Why `retry_on` and `give_up_on` refuse `exc`, or None if they allow a retry."""
    if not isinstance(exc, BaseExceptionGroup):  # the common case, without the tree walk
        if isinstance(exc, give_up_on):
            return f"{type(exc).__name__} is in give_up_on"
        if not isinstance(exc, retry_on):
            return f"{type(exc).__name__} is not in retry_on"
        return None
    for node in nodes(exc):
        if matches(node, give_up_on):
            return f"{type(node).__name__} is in give_up_on"
    refused = retryable(exc, retry_on)
    if refused is not None:
        return f"{type(refused).__name__} is not in retry_on"
    return None
