"""Typed errors raised by the LLM layer; every message is one line a user can act on."""

from __future__ import annotations


class LLMError(RuntimeError):
    """Base class for failures of a model call after its retries."""

    def __init__(self, role: str, message: str) -> None:
        super().__init__(f"{role}: {message}")
        self.role = role


class LLMCallError(LLMError):
    """The endpoint could not be reached or kept failing (timeouts, 5xx, connection resets)."""


class EndpointDown(LLMCallError):
    """The endpoint refused connections or rejected authentication: retrying later may help."""


class EndpointRefused(LLMCallError):
    """The endpoint refused the request as malformed (HTTP 400/422): it will refuse it again
    until a setting changes, so it is not retried; the run pauses like on any call error.

    `fix` is that setting as `KEY=VALUE` (for `drpo resume --set`), or "" when none is known.
    """

    def __init__(self, role: str, message: str, fix: str = "") -> None:
        super().__init__(role, message)
        self.fix = fix


class StructuredOutputError(LLMError):
    """The reply never parsed into the requested schema; recorded as missing, never as 0."""


class CredentialError(ValueError):
    """A role names an API-key environment variable that is not set."""
