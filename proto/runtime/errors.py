"""Turning exceptions from the edges into one line a user can act on."""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """The exception's message, with its kind when the message alone is unclear."""
    from nats.errors import NoServersError
    from nats.js.errors import APIError

    if isinstance(exc, NoServersError):
        return "could not connect to any NATS server (is it running, and the URL right?)"
    if isinstance(exc, APIError):
        return f"JetStream refused the request: {exc.description or exc} (code {exc.err_code})"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (ValueError, RuntimeError)) else f"{type(exc).__name__}: {text}"
