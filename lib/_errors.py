"""dawdle's exceptions: one root, families grouped by what the caller can do about them."""

from __future__ import annotations


class DawdleError(Exception):
    """Root of every exception dawdle raises on its own account."""


class ConfigurationError(DawdleError, ValueError):
    """A value given to dawdle is invalid; the message names it. Fix the call, do not retry."""
